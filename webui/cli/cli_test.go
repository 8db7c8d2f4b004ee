package cli

import (
	"bytes"
	"strings"
	"testing"
)

func noEnv(string) string { return "" }

// TestFlagValues parses the documented shorthands and list flags.
func TestFlagValues(t *testing.T) {
	cmd := NewCommand(noEnv)
	args := []string{"-p", "8080", "--allowed-users", "a@x,b@y", "--scopes", "auth_keys", "--adapter", "127.0.0.1:1"}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	f := cmd.Flags()
	for _, tc := range []struct{ name, want string }{
		{"port", "8080"},
		{"allowed-users", "[a@x,b@y]"},
		{"scopes", "[auth_keys]"},
		{"adapter", "[127.0.0.1:1]"},
	} {
		if got := f.Lookup(tc.name).Value.String(); got != tc.want {
			t.Errorf("--%s = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestNoCredentials fails clearly, naming the variables to set.
func TestNoCredentials(t *testing.T) {
	cmd := NewCommand(noEnv)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"--dev"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "HEADSCALE_URL") || !strings.Contains(err.Error(), "TS_OAUTH_CLIENT_ID") {
		t.Fatalf("got %v", err)
	}
}
