package cli

import (
	"slices"
	"strings"
	"testing"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/adapter"
)

func noEnv(string) string { return "" }

// TestSocketFlag checks that --socket keeps its default until given, and
// that repeating it serves several targets.
func TestSocketFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"default", nil, []string{adapter.DefaultSocket}},
		{"one", []string{"--socket", "/a.sock"}, []string{"/a.sock"}},
		{"repeated", []string{"--socket", "/a.sock", "--socket=/pods"}, []string{"/a.sock", "/pods"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := NewCommand(noEnv)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			got := strings.Split(cmd.Flags().Lookup("socket").Value.String(), ",")
			if !slices.Equal(got, tc.want) {
				t.Errorf("--socket = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestShorthands checks -d and -p.
func TestShorthands(t *testing.T) {
	cmd := NewCommand(noEnv)
	if err := cmd.ParseFlags([]string{"-d", "-p", "4000"}); err != nil {
		t.Fatal(err)
	}
	f := cmd.Flags()
	if d, _ := f.GetBool("discover-socket"); !d {
		t.Error("-d did not set --discover-socket")
	}
	if p, _ := f.GetString("port"); p != "4000" {
		t.Errorf("-p 4000: --port = %q", p)
	}
}

func TestFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c := adapter.Config{Logout: true}
	fromEnv(logger.Discard, &c, env(map[string]string{"HEADSCALE_URL": "http://hs:8080", "TS_AUTHKEY": "tskey-secret"}))
	if c.ControlURL != "http://hs:8080" || c.AuthKey.Reveal() != "tskey-secret" || c.ControlPlane != nil {
		t.Errorf("URL only: %+v", c)
	}
	c = adapter.Config{Logout: true}
	fromEnv(logger.Discard, &c, env(map[string]string{"HEADSCALE_URL": "http://hs:8080", "HEADSCALE_API_KEY": "k", "TS_CONTROL_URL": "http://ctl"}))
	if c.ControlURL != "http://ctl" || c.ControlPlane == nil {
		t.Errorf("with API key: URL %q, client %v", c.ControlURL, c.ControlPlane)
	}
	if s := c.AuthKey.String(); strings.Contains(s, "tskey") {
		t.Errorf("auth key printed as %q", s)
	}
}

// TestGenerateAuthFromEnv: without TS_AUTHKEY, API credentials mint the
// adapter's key, which needs the control-plane client even without
// --logout; TS_AUTHKEY always wins.
func TestGenerateAuthFromEnv(t *testing.T) {
	creds := map[string]string{"HEADSCALE_URL": "http://hs:8080", "HEADSCALE_API_KEY": "k"}
	withKey := map[string]string{"HEADSCALE_URL": "http://hs:8080", "HEADSCALE_API_KEY": "k", "TS_AUTHKEY": "tskey-x"}
	for _, tc := range []struct {
		name                 string
		cfg                  adapter.Config
		env                  map[string]string
		wantMint, wantClient bool
	}{
		{"credentials, no key", adapter.Config{Logout: true}, creds, true, true},
		{"credentials, no key, no logout", adapter.Config{}, creds, true, true},
		{"key and credentials", adapter.Config{Logout: true}, withKey, false, true},
		{"key and credentials, no logout", adapter.Config{}, withKey, false, false},
		{"URL only", adapter.Config{Logout: true}, map[string]string{"HEADSCALE_URL": "http://hs:8080"}, false, false},
		{"dev", adapter.Config{Dev: true, Logout: true}, creds, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			fromEnv(logger.Discard, &c, func(k string) string { return tc.env[k] })
			if c.GenerateAuth != tc.wantMint || (c.ControlPlane != nil) != tc.wantClient {
				t.Errorf("GenerateAuth %v, client %v; want %v, %v", c.GenerateAuth, c.ControlPlane != nil, tc.wantMint, tc.wantClient)
			}
		})
	}
}
