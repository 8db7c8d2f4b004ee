package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// documentedFlags is the Flags section of `tsymbiote webui --help` as the
// documentation prints it.
const documentedFlags = `      --adapter-port string      Adapter port (default "3621")
      --allowed-users strings    Comma-separated allowed users
      --dev                      Run in HTTP mode for local dev
      --generate-auth            Generate authkey using OAuth client
      --hostname string          Static hostname
      --hostname-prefix string   Hostname prefix (default "tsymbiote-webui")
      --logout                   Logout on exit (default true)
  -p, --port string              Service port (default "3621")
      --scopes strings           OAuth scopes (default [auth_keys,devices:core:read])
`

func noEnv(string) string { return "" }

// TestHelpFlags compares the Flags section of --help with the documented
// one, byte for byte, apart from the -h line.
func TestHelpFlags(t *testing.T) {
	cmd := NewCommand(noEnv)
	if cmd.Use != "webui" {
		t.Errorf("Use = %q, want webui", cmd.Use)
	}
	if got := helpFlags(t, cmd); got != documentedFlags {
		t.Errorf("--help Flags section:\n%s\nwant:\n%s", got, documentedFlags)
	}
}

// helpFlags runs --help and returns its Flags section without the -h line.
func helpFlags(t *testing.T, cmd *cobra.Command) string {
	t.Helper()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(out.String(), "\nFlags:\n")
	if !ok {
		t.Fatalf("no Flags section in:\n%s", out.String())
	}
	section, _, _ = strings.Cut(section, "\n\n")
	var b strings.Builder
	for line := range strings.Lines(strings.TrimRight(section, "\n") + "\n") {
		if !strings.Contains(line, "--help") {
			b.WriteString(line)
		}
	}
	return b.String()
}

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
