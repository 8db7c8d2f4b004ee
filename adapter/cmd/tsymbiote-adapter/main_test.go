package main

import (
	"strings"
	"testing"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/adapter"
)

// TestFlags pins the command's flags: names, shorthands and defaults.
func TestFlags(t *testing.T) {
	cmd := newCommand(func(string) string { return "" })
	f := cmd.Flags()
	for _, tc := range []struct{ name, short, def string }{
		{"allowed-tag", "", "tag:tsymbiote-webui"},
		{"dev", "", "false"},
		{"discover-socket", "d", "false"},
		{"hostname", "", ""},
		{"hostname-prefix", "", "tsymbiote-adapter"},
		{"logout", "", "true"},
		{"port", "p", "3621"},
		{"socket", "", "[/var/run/tailscale/tailscaled.sock]"},
	} {
		fl := f.Lookup(tc.name)
		if fl == nil {
			t.Errorf("--%s missing", tc.name)
			continue
		}
		if fl.Shorthand != tc.short || fl.DefValue != tc.def {
			t.Errorf("--%s: shorthand %q default %q, want %q %q", tc.name, fl.Shorthand, fl.DefValue, tc.short, tc.def)
		}
	}
	if err := f.Parse([]string{"-d", "-p", "4000", "--socket", "/a.sock", "--socket", "/pods"}); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.GetStringArray("socket"); strings.Join(v, ",") != "/a.sock,/pods" {
		t.Errorf("repeated --socket = %v", v)
	}
}

func TestFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	var c adapter.Config
	c.Logout = true
	if err := fromEnv(logger.Discard, &c, env(map[string]string{"HEADSCALE_URL": "http://hs:8080", "TS_AUTHKEY": "tskey-secret"})); err != nil {
		t.Fatal(err)
	}
	if c.ControlURL != "http://hs:8080" || c.AuthKey.Reveal() != "tskey-secret" || c.ControlPlane != nil {
		t.Errorf("URL only: %+v", c)
	}
	c = adapter.Config{Logout: true}
	if err := fromEnv(logger.Discard, &c, env(map[string]string{"HEADSCALE_URL": "http://hs:8080", "HEADSCALE_API_KEY": "k", "TS_CONTROL_URL": "http://ctl"})); err != nil {
		t.Fatal(err)
	}
	if c.ControlURL != "http://ctl" || c.ControlPlane == nil {
		t.Errorf("with API key: URL %q, client %v", c.ControlURL, c.ControlPlane)
	}
	if s := c.AuthKey.String(); strings.Contains(s, "tskey") {
		t.Errorf("auth key printed as %q", s)
	}
}
