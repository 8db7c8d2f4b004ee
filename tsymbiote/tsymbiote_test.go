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

// TestSubcommandHelp checks that each part answers --help under its
// documented name; the cli packages' own tests pin their Flags sections.
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
