package cli

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/adapter"
)

// documentedFlags is the Flags section of `tsymbiote adapter --help` as the
// documentation prints it.
const documentedFlags = `      --allowed-tag string       Tag for access control (default "tag:tsymbiote-webui")
      --dev                      Run in HTTP mode for local dev
  -d, --discover-socket          Auto-discover socket path (for k8s sidecar)
      --hostname string          Static hostname
      --hostname-prefix string   Hostname prefix (default "tsymbiote-adapter")
      --logout                   Logout on exit (default true)
  -p, --port string              Service port (default "3621")
      --socket string            Path to tailscaled socket (default /var/run/tailscale/tailscaled.sock)
`

func noEnv(string) string { return "" }

// TestHelpFlags compares the Flags section of --help with the documented
// one, byte for byte, apart from the -h line.
func TestHelpFlags(t *testing.T) {
	cmd := NewCommand(noEnv)
	if cmd.Use != "adapter" {
		t.Errorf("Use = %q, want adapter", cmd.Use)
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
