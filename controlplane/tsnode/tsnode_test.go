package tsnode

import (
	"context"
	"errors"
	"strings"
	"testing"

	"tailscale.com/envknob"
)

func TestHostnameFor(t *testing.T) {
	for _, tc := range []struct{ prefix, machine, want string }{
		{"tsymbiote-adapter", "web-7d9f8-x2x.cluster.local", "tsymbiote-adapter-web-7d9f8-x2x"},
		{"tsymbiote-webui", "My_Laptop", "tsymbiote-webui-mylaptop"},
		{"tsymbiote-webui", "", "tsymbiote-webui"},
		{"tsymbiote-webui", "---", "tsymbiote-webui"},
		{"p", strings.Repeat("a", 70), "p-" + strings.Repeat("a", 61)},
		{"p", strings.Repeat("a", 60) + "-bc", "p-" + strings.Repeat("a", 60)},
	} {
		got := hostnameFor(tc.prefix, tc.machine)
		if got != tc.want {
			t.Errorf("hostnameFor(%q, %q) = %q, want %q", tc.prefix, tc.machine, got, tc.want)
		}
		if err := CheckHostname(got); err != nil {
			t.Errorf("hostnameFor(%q, %q) = %q, not a hostname: %v", tc.prefix, tc.machine, got, err)
		}
	}
}

func TestCheckHostname(t *testing.T) {
	for h, ok := range map[string]bool{
		"node-1":                true,
		"Node1":                 true,
		"":                      false,
		"a.b":                   false,
		"a b":                   false,
		strings.Repeat("a", 63): true,
		strings.Repeat("a", 64): false,
	} {
		if err := CheckHostname(h); (err == nil) != ok {
			t.Errorf("CheckHostname(%q) = %v, want ok=%v", h, err, ok)
		}
	}
}

func FuzzHostnameFor(f *testing.F) {
	f.Add("tsymbiote-adapter", "pod.example")
	f.Fuzz(func(t *testing.T, prefix, machine string) {
		if CheckHostname(prefix) != nil {
			return // Validate refuses such prefixes before we get here
		}
		if h := hostnameFor(prefix, machine); CheckHostname(h) != nil {
			t.Errorf("hostnameFor(%q, %q) = %q", prefix, machine, h)
		}
	})
}

func TestCheckHostnameFlags(t *testing.T) {
	for _, tc := range []struct{ hostname, prefix, wantErr string }{
		{"", "tsymbiote-webui", ""},
		{"node-1", "", ""}, // --hostname wins; the prefix is not used
		{"a.b", "tsymbiote-webui", "--hostname: "},
		{"", "bad prefix", "--hostname-prefix: "},
	} {
		err := CheckHostnameFlags(tc.hostname, tc.prefix)
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.HasPrefix(err.Error(), tc.wantErr)) {
			t.Errorf("CheckHostnameFlags(%q, %q) = %v, want error starting %q", tc.hostname, tc.prefix, err, tc.wantErr)
		}
	}
	if got := Hostname("node-1", "ignored"); got != "node-1" {
		t.Errorf("Hostname with --hostname set = %q", got)
	}
}

func TestServe(t *testing.T) {
	t.Run("context ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		block := make(chan struct{})
		defer close(block)
		readied := false
		go cancel()
		if err := Serve(ctx, func() { readied = true }, func() error { <-block; return nil }); err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
		if !readied {
			t.Error("ready was not called")
		}
	})
	t.Run("a server fails", func(t *testing.T) {
		block := make(chan struct{})
		defer close(block)
		boom := errors.New("boom")
		err := Serve(context.Background(), nil,
			func() error { <-block; return nil },
			func() error { return boom })
		if !errors.Is(err, boom) || err.Error() != "serving: boom" {
			t.Errorf("Serve = %v, want serving: boom", err)
		}
	})
}

// TestJoinTurnsOffLogUpload: a daemon that joins never uploads its logs to
// Tailscale, even when its join fails.
func TestJoinTurnsOffLogUpload(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Join(ctx, t.Logf, Options{Dir: t.TempDir(), Hostname: "nologs", ControlURL: "http://127.0.0.1:1"}); err == nil {
		t.Fatal("Join with a cancelled context succeeded")
	}
	if !envknob.NoLogsNoSupport() {
		t.Error("log upload is still on after Join")
	}
}
