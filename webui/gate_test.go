package webui

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"
)

type fakeWhoIs map[string]*apitype.WhoIsResponse

func (f fakeWhoIs) WhoIs(_ context.Context, addr string) (*apitype.WhoIsResponse, error) {
	if w, ok := f[addr]; ok {
		return w, nil
	}
	return nil, errors.New("no such peer")
}

func TestGate(t *testing.T) {
	who := fakeWhoIs{
		"100.64.0.1:1": {Node: &tailcfg.Node{ComputedName: "laptop"}, UserProfile: &tailcfg.UserProfile{LoginName: "Alice@Example.com"}},
		"100.64.0.2:1": {Node: &tailcfg.Node{ComputedName: "bob-pc"}, UserProfile: &tailcfg.UserProfile{LoginName: "bob@example.com"}},
		"100.64.0.3:1": {Node: &tailcfg.Node{ComputedName: "ci", Tags: []string{"tag:ci"}}, UserProfile: &tailcfg.UserProfile{LoginName: "tagged-devices"}},
	}
	for _, tc := range []struct {
		allowed []string
		addr    string
		want    bool
	}{
		{nil, "100.64.0.2:1", true},
		{[]string{"alice@example.com"}, "100.64.0.1:1", true}, // case-insensitive
		{[]string{"alice@example.com"}, "100.64.0.2:1", false},
		{[]string{"alice@example.com"}, "100.64.0.3:1", false},
		{[]string{"tag:ci"}, "100.64.0.3:1", true},
		{[]string{"tagged-devices"}, "100.64.0.3:1", true},
		{nil, "100.64.0.9:1", false}, // not a tailnet node at all
	} {
		g := &gate{whois: who, allowed: tc.allowed}
		c := g.check(context.Background(), tc.addr)
		if c.Allowed != tc.want || (!c.Allowed && c.Reason == "") {
			t.Errorf("allowed %v, caller %s: got %v (%s), want %v", tc.allowed, tc.addr, c.Allowed, c.Reason, tc.want)
		}
	}
	// Dev mode has no identities and admits everyone.
	if c := (&gate{allowed: []string{"x@y"}}).check(context.Background(), "127.0.0.1:5"); !c.Allowed || !c.Dev {
		t.Errorf("dev: %+v", c)
	}

	g := &gate{whois: who, allowed: []string{"alice@example.com"}}
	h := g.middleware(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("in")) }))
	for path, wantType := range map[string]string{"/": "text/html", "/api/graph": "application/json", "/metrics": "application/json"} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "100.64.0.2:1"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 403 || !strings.HasPrefix(rec.Header().Get("Content-Type"), wantType) || !strings.Contains(rec.Body.String(), "bob@example.com is not in") {
			t.Errorf("%s: %d %s %q", path, rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{AdapterPort: "3621", HostnamePrefix: "tsymbiote-webui", Port: "3621", Dev: true, Adapters: []string{"127.0.0.1:9"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Port = "x" }, "--port"},
		{func(c *Config) { c.AdapterPort = "70000" }, "--adapter-port"},
		{func(c *Config) { c.Hostname = "bad name" }, "--hostname"},
		{func(c *Config) { c.HostnamePrefix = "" }, "--hostname-prefix"},
		{func(c *Config) { c.AllowedUsers = []string{""} }, "--allowed-users"},
		{func(c *Config) { c.Adapters = []string{"nohost"} }, "--adapter"},
		{func(c *Config) { c.Dev = false }, "--adapter: only with --dev"},
		{func(c *Config) { c.GenerateAuth = true }, "--generate-auth"},
		{func(c *Config) { c.Adapters = nil }, "no control plane credentials"},
		{func(c *Config) { c.ControlURL = "ftp://x" }, "control URL"},
		{func(c *Config) { c.HealthAddr = "8081" }, "--health-addr"},
		{func(c *Config) { c.HealthAddr = ":x" }, "--health-addr"},
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want error with %q, got %v", tc.want, err)
		}
	}
}
