package proxyconfig

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

const full = `{
  "generation": 3,
  "hostname": "default-web",
  "tags": ["tag:k8s"],
  "forwards": [
    {"service": "default/web", "protocol": "TCP", "port": 8080, "target": "10.96.0.10:80"},
    {"service": "default/dns", "protocol": "UDP", "port": 53, "target": "[fd00::1]:53"}
  ],
  "http": {
    "routes": [
      {"host": "app.example.com", "path": "/api", "pathType": "Prefix", "backend": "10.96.0.11:80", "service": "default/api"},
      {"path": "/", "pathType": "Exact", "backend": "web.default.svc:80"}
    ],
    "tls": [{"hosts": ["app.example.com", "*.example.com"], "certKey": "tls-0.crt", "keyKey": "tls-0.key"}],
    "tailnetCert": true,
    "redirectHTTP": true
  },
  "advertiseRoutes": ["10.96.0.0/12", "fd00::/64"]
}`

func TestParseFull(t *testing.T) {
	c, err := Parse([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Generation: 3,
		Hostname:   "default-web",
		Tags:       []string{"tag:k8s"},
		Forwards: []Forward{
			{Service: "default/web", Protocol: "TCP", Port: 8080, Target: "10.96.0.10:80"},
			{Service: "default/dns", Protocol: "UDP", Port: 53, Target: "[fd00::1]:53"},
		},
		HTTP: &HTTP{
			Routes: []Route{
				{Host: "app.example.com", Path: "/api", PathType: "Prefix", Backend: "10.96.0.11:80", Service: "default/api"},
				{Path: "/", PathType: "Exact", Backend: "web.default.svc:80"},
			},
			TLS:          []TLS{{Hosts: []string{"app.example.com", "*.example.com"}, CertKey: "tls-0.crt", KeyKey: "tls-0.key"}},
			TailnetCert:  true,
			RedirectHTTP: true,
		},
		AdvertiseRoutes: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00::/64")},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Parse =\n%+v\nwant\n%+v", c, want)
	}
	b, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(Marshal): %v", err)
	}
	if !reflect.DeepEqual(c2, c) {
		t.Fatalf("round trip changed the config:\n%+v\n%+v", c2, c)
	}
}

func TestParseErrors(t *testing.T) {
	base := func() map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(full), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name    string
		edit    func(m map[string]any)
		raw     string // used instead of edit when set
		wantErr string
	}{
		{name: "not json", raw: "{", wantErr: "decoding config.json"},
		{name: "trailing", raw: `{"hostname":"a"} {}`, wantErr: "trailing data"},
		{name: "unknown field", edit: func(m map[string]any) { m["hostnmae"] = "x" }, wantErr: `unknown field "hostnmae"`},
		{name: "no hostname", edit: func(m map[string]any) { delete(m, "hostname") }, wantErr: "hostname:"},
		{name: "upper hostname", edit: func(m map[string]any) { m["hostname"] = "Web" }, wantErr: "hostname:"},
		{name: "long hostname", edit: func(m map[string]any) { m["hostname"] = strings.Repeat("a", 64) }, wantErr: "hostname:"},
		{name: "dash hostname", edit: func(m map[string]any) { m["hostname"] = "web-" }, wantErr: "hostname:"},
		{name: "bad tag", edit: func(m map[string]any) { m["tags"] = []any{"tag:k8s", "k8s"} }, wantErr: "tags[1]:"},
		{name: "negative generation", edit: func(m map[string]any) { m["generation"] = -1 }, wantErr: "generation:"},
		{name: "bad protocol", edit: func(m map[string]any) { fw(m, 0)["protocol"] = "SCTP" }, wantErr: "forwards[0]: protocol:"},
		{name: "lower protocol", edit: func(m map[string]any) { fw(m, 1)["protocol"] = "udp" }, wantErr: "forwards[1]: protocol:"},
		{name: "port 0", edit: func(m map[string]any) { fw(m, 0)["port"] = 0 }, wantErr: "forwards[0]: port:"},
		{name: "port too big", edit: func(m map[string]any) { fw(m, 0)["port"] = 70000 }, wantErr: "decoding"},
		{name: "target no port", edit: func(m map[string]any) { fw(m, 0)["target"] = "10.96.0.10" }, wantErr: "forwards[0]: target:"},
		{name: "target port 0", edit: func(m map[string]any) { fw(m, 0)["target"] = "10.96.0.10:0" }, wantErr: "forwards[0]: target:"},
		{name: "target v6 unbracketed", edit: func(m map[string]any) { fw(m, 1)["target"] = "fd00::1:53" }, wantErr: "forwards[1]: target:"},
		{name: "target bad host", edit: func(m map[string]any) { fw(m, 0)["target"] = "a b:80" }, wantErr: "forwards[0]: target:"},
		{name: "bad service", edit: func(m map[string]any) { fw(m, 0)["service"] = "web" }, wantErr: "forwards[0]: service:"},
		{name: "duplicate port", edit: func(m map[string]any) { fw(m, 1)["protocol"] = "TCP"; fw(m, 1)["port"] = 8080 }, wantErr: "forwards[1]: TCP port 8080 already forwarded by forwards[0]"},
		{name: "http port taken", edit: func(m map[string]any) { fw(m, 0)["port"] = 443 }, wantErr: "forwards[0]: TCP port 443 is the HTTP proxy's"},
		{name: "route host", edit: func(m map[string]any) { route(m, 0)["host"] = "App.example.com" }, wantErr: "http: routes[0]: host:"},
		{name: "route path", edit: func(m map[string]any) { route(m, 0)["path"] = "api" }, wantErr: "http: routes[0]: path:"},
		{name: "route query", edit: func(m map[string]any) { route(m, 0)["path"] = "/a?b" }, wantErr: "http: routes[0]: path:"},
		{name: "route pathType", edit: func(m map[string]any) { route(m, 1)["pathType"] = "Regex" }, wantErr: "http: routes[1]: pathType:"},
		{name: "route backend", edit: func(m map[string]any) { route(m, 1)["backend"] = "" }, wantErr: "http: routes[1]: backend:"},
		{name: "tls host", edit: func(m map[string]any) { tls0(m)["hosts"] = []any{"a..b"} }, wantErr: "http: tls[0].hosts[0]:"},
		{name: "tls certKey", edit: func(m map[string]any) { tls0(m)["certKey"] = "a/b" }, wantErr: "http: tls[0].certKey:"},
		{name: "tls keyKey config", edit: func(m map[string]any) { tls0(m)["keyKey"] = "config.json" }, wantErr: "http: tls[0]:"},
		{name: "tls same keys", edit: func(m map[string]any) { tls0(m)["keyKey"] = "tls-0.crt" }, wantErr: "certKey and keyKey"},
		{name: "route bad prefix", edit: func(m map[string]any) { m["advertiseRoutes"] = []any{"10.96.0.0/40"} }, wantErr: "decoding"},
		{name: "route host bits", edit: func(m map[string]any) { m["advertiseRoutes"] = []any{"10.96.0.1/12"} }, wantErr: "advertiseRoutes[0]: 10.96.0.1/12 has host bits set"},
		{name: "route overlap", edit: func(m map[string]any) { m["advertiseRoutes"] = []any{"10.96.0.0/12", "10.100.0.0/16"} }, wantErr: "advertiseRoutes[1]: 10.100.0.0/16 overlaps advertiseRoutes[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.raw)
			if tt.raw == "" {
				m := base()
				tt.edit(m)
				var err error
				if b, err = json.Marshal(m); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Parse(b)
			if err == nil {
				t.Fatalf("Parse(%s) = %+v, want an error", b, c)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseMinimal(t *testing.T) {
	c, err := Parse([]byte(`{"hostname":"r"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP != nil || len(c.Forwards) != 0 {
		t.Fatalf("minimal config = %+v", c)
	}
}

func fw(m map[string]any, i int) map[string]any {
	return m["forwards"].([]any)[i].(map[string]any)
}

func route(m map[string]any, i int) map[string]any {
	return m["http"].(map[string]any)["routes"].([]any)[i].(map[string]any)
}

func tls0(m map[string]any) map[string]any {
	return m["http"].(map[string]any)["tls"].([]any)[0].(map[string]any)
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// survives Marshal and Parse unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte(`{"hostname":"r"}`))
	f.Add([]byte(`{"hostname":"r","advertiseRoutes":["10.0.0.0/8","::/0"]}`))
	f.Add([]byte(`{"hostname":"r","forwards":[{"protocol":"UDP","port":1,"target":"[::1]:1"}]}`))
	f.Add([]byte(`{"hostname":"r","http":{"routes":[{"backend":"a:1"}]}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config with error %v", err)
			}
			return
		}
		out, err := Marshal(c)
		if err != nil {
			t.Fatalf("Marshal of a parsed config: %v", err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)) = %v for %s", err, out)
		}
		out2, _ := json.Marshal(c2)
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the config:\n%s\n%s", out, out2)
		}
	})
}
