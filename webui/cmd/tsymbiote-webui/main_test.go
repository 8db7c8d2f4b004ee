package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestFlags pins the command's flags and defaults.
func TestFlags(t *testing.T) {
	cmd := newCommand(func(string) string { return "" })
	want := map[string]string{
		"adapter-port":    "3621",
		"allowed-users":   "[]",
		"dev":             "false",
		"generate-auth":   "false",
		"hostname":        "",
		"hostname-prefix": "tsymbiote-webui",
		"logout":          "true",
		"port":            "3621",
		"scopes":          "[auth_keys,devices:core:read]",
	}
	for name, def := range want {
		f := cmd.Flags().Lookup(name)
		if f == nil {
			t.Errorf("--%s missing", name)
			continue
		}
		if f.DefValue != def {
			t.Errorf("--%s default %q, want %q", name, f.DefValue, def)
		}
	}
	if f := cmd.Flags().ShorthandLookup("p"); f == nil || f.Name != "port" {
		t.Errorf("-p is not --port")
	}
}

// TestNoCredentials fails clearly, naming the variables to set.
func TestNoCredentials(t *testing.T) {
	cmd := newCommand(func(string) string { return "" })
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"--dev"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "HEADSCALE_URL") || !strings.Contains(err.Error(), "TS_OAUTH_CLIENT_ID") {
		t.Fatalf("got %v", err)
	}
}
