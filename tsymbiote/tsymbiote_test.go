package tsymbiote

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

func noEnv(string) string { return "" }

// run executes the root command with args and returns what it printed.
func run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := NewCommand(noEnv)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("tsymbiote %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// documentedAdapterFlags and documentedWebUIFlags are the Flags sections of
// `tsymbiote adapter --help` and `tsymbiote webui --help` as TSymbiote's
// usage documentation prints them: users copy these flags into scripts and
// manifests, so a change here is a breaking change.
const documentedAdapterFlags = `      --allowed-tag string       Tag for access control (default "tag:tsymbiote-webui")
      --dev                      Run in HTTP mode for local dev
  -d, --discover-socket          Auto-discover socket path (for k8s sidecar)
      --hostname string          Static hostname
      --hostname-prefix string   Hostname prefix (default "tsymbiote-adapter")
      --logout                   Logout on exit (default true)
  -p, --port string              Service port (default "3621")
      --socket string            Path to tailscaled socket (default /var/run/tailscale/tailscaled.sock)
`

const documentedWebUIFlags = `      --adapter-port string      Adapter port (default "3621")
      --allowed-users strings    Comma-separated allowed users
      --dev                      Run in HTTP mode for local dev
      --generate-auth            Generate authkey using OAuth client
      --hostname string          Static hostname
      --hostname-prefix string   Hostname prefix (default "tsymbiote-webui")
      --logout                   Logout on exit (default true)
  -p, --port string              Service port (default "3621")
      --scopes strings           OAuth scopes (default [auth_keys,devices:core:read])
`

// TestDocumentedFlags compares the Flags section of each part's --help with
// the documented one, byte for byte, apart from the -h line.
func TestDocumentedFlags(t *testing.T) {
	for _, tc := range []struct{ part, want string }{
		{"adapter", documentedAdapterFlags},
		{"webui", documentedWebUIFlags},
	} {
		t.Run(tc.part, func(t *testing.T) {
			out := run(t, tc.part, "--help")
			_, section, ok := strings.Cut(out, "\nFlags:\n")
			if !ok {
				t.Fatalf("no Flags section in:\n%s", out)
			}
			section, _, _ = strings.Cut(section, "\n\n")
			var got strings.Builder
			for line := range strings.Lines(strings.TrimRight(section, "\n") + "\n") {
				if !strings.Contains(line, "--help") {
					got.WriteString(line)
				}
			}
			if got.String() != tc.want {
				t.Errorf("tsymbiote %s --help Flags section:\n%s\nwant:\n%s", tc.part, got.String(), tc.want)
			}
		})
	}
}

// TestSubcommandHelp checks that each part answers --help under its
// documented name.
func TestSubcommandHelp(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		wants []string
	}{
		{[]string{"--help"}, []string{"tsymbiote [command]", "adapter", "webui", "version"}},
		{[]string{"adapter", "--help"}, []string{"Usage:\n  tsymbiote adapter [flags]\n", "TS_AUTHKEY", "  -p, --port string "}},
		{[]string{"webui", "--help"}, []string{"Usage:\n  tsymbiote webui [flags]\n", "TS_OAUTH_CLIENT_ID", "      --generate-auth "}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out := run(t, tc.args...)
			for _, want := range tc.wants {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "Global Flags") {
				t.Errorf("the root adds flags to its subcommands:\n%s", out)
			}
		})
	}
}

func TestVersionCommand(t *testing.T) {
	out := run(t, "version")
	if !strings.HasPrefix(out, "tsymbiote ") || !strings.Contains(out, "\nrevision ") {
		t.Errorf("tsymbiote version printed %q", out)
	}
}

// TestVersionFrom checks that link-time stamps win and that the binary's
// build information fills what they leave out.
func TestVersionFrom(t *testing.T) {
	build := func(version string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: version}, Settings: settings}, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "abc123"}
	for _, tc := range []struct {
		name               string
		stampVer, stampRev string
		read               func() (*debug.BuildInfo, bool)
		wantVer, wantRev   string
	}{
		{"stamped", "v1.2.3", "def456", build("(devel)", rev), "v1.2.3", "def456"},
		{"build info", "", "", build("(devel)", rev), "(devel)", "abc123"},
		{"dirty tree", "", "", build("v0.1.0", rev, debug.BuildSetting{Key: "vcs.modified", Value: "true"}), "v0.1.0", "abc123+dirty"},
		{"nothing recorded", "", "", build(""), "(devel)", "unknown"},
		{"no build info", "", "", none, "(devel)", "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := versionFrom(tc.stampVer, tc.stampRev, tc.read)
			if got.Version != tc.wantVer || got.Revision != tc.wantRev {
				t.Errorf("got %s %s, want %s %s", got.Version, got.Revision, tc.wantVer, tc.wantRev)
			}
		})
	}
}
