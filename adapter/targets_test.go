package adapter

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustT(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestTargets(t *testing.T) {
	dir := t.TempDir()
	pods := filepath.Join(dir, "pods")
	mustT(t, os.Mkdir(pods, 0o755))
	for _, n := range []string{"pod-a.sock", "pod-b.sock", "README", "sub.sock.d"} {
		mustT(t, os.WriteFile(filepath.Join(pods, n), nil, 0o600))
	}
	one := filepath.Join(dir, "tailscaled.sock")

	tg, err := NewTargets([]string{one})
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := tg.Default(); !ok || d.Name != one {
		t.Errorf("single target default = %v, %v", d, ok)
	}
	if got, err := tg.Resolve(""); err != nil || got.Socket != one {
		t.Errorf(`Resolve("") = %v, %v`, got, err)
	}

	tg, _ = NewTargets([]string{one, pods, one + "/"})
	l := tg.List()
	var names []string
	for _, x := range l {
		names = append(names, x.Name)
	}
	if strings.Join(names, ",") != one+",pod-a,pod-b" {
		t.Errorf("List = %v", names)
	}
	if _, err := tg.Resolve(""); !errors.Is(err, errNoDefault) {
		t.Errorf(`Resolve("") among 3 = %v`, err)
	}
	if got, err := tg.Resolve("pod-b"); err != nil || got.Socket != filepath.Join(pods, "pod-b.sock") {
		t.Errorf("Resolve(pod-b) = %v, %v", got, err)
	}
	if _, err := tg.Resolve("pod-c"); !errors.Is(err, errUnknownTarget) || !strings.Contains(err.Error(), `"pod-a"`) {
		t.Errorf("Resolve(pod-c) = %v", err)
	}
	// Pods come and go: the directory is read on every call.
	mustT(t, os.WriteFile(filepath.Join(pods, "pod-c.sock"), nil, 0o600))
	if _, err := tg.Resolve("pod-c"); err != nil {
		t.Errorf("new pod not seen: %v", err)
	}
	if _, err := NewTargets(nil); err == nil {
		t.Error("NewTargets(nil) succeeded")
	}
	if _, err := NewTargets([]string{" "}); err == nil {
		t.Error("NewTargets(blank) succeeded")
	}
}

// TestDirTargets covers what a --socket directory contributes: *.sock
// files, and per-pod directories holding a tailscaled.sock as
// tailscale-cni's daemon keeps them (<runDir>/pods/<namespace>_<pod>).
func TestDirTargets(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string          // made empty, with their directories
		dirs  []string          // made empty
		links map[string]string // link -> target, relative to the directory
		want  []string          // name=socket relative to the directory
	}{
		{name: "empty"},
		{
			name:  "sock files",
			files: []string{"a.sock", "b.sock", "README"},
			want:  []string{"a=a.sock", "b=b.sock"},
		},
		{
			name:  "per-pod directories",
			files: []string{"default_web-1/tailscaled.sock", "kube-system_dns/tailscaled.sock"},
			want:  []string{"default_web-1=default_web-1/tailscaled.sock", "kube-system_dns=kube-system_dns/tailscaled.sock"},
		},
		{
			// A pod the daemon is still setting up has its directory but
			// no socket yet; only the tailscaled.sock name counts.
			name:  "directory without its socket",
			files: []string{"ns_ready/tailscaled.sock", "ns_other/other.sock"},
			dirs:  []string{"ns_starting"},
			want:  []string{"ns_ready=ns_ready/tailscaled.sock"},
		},
		{
			name:  "one level only",
			files: []string{"ns_pod/nested/tailscaled.sock"},
		},
		{
			name:  "both layouts",
			files: []string{"host.sock", "ns_pod/tailscaled.sock"},
			want:  []string{"host=host.sock", "ns_pod=ns_pod/tailscaled.sock"},
		},
		{
			name:  "a sock file wins over a directory of the same name",
			files: []string{"x.sock", "x/tailscaled.sock"},
			want:  []string{"x=x.sock"},
		},
		{
			name:  "symlinked pod directory",
			files: []string{"real/ns_pod/tailscaled.sock"},
			links: map[string]string{"ns_link": "real/ns_pod"},
			want:  []string{"ns_link=ns_link/tailscaled.sock"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tc.files {
				mustT(t, os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755))
				mustT(t, os.WriteFile(filepath.Join(dir, f), nil, 0o600))
			}
			for _, d := range tc.dirs {
				mustT(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
			}
			for l, to := range tc.links {
				mustT(t, os.Symlink(filepath.Join(dir, to), filepath.Join(dir, l)))
			}
			tg, err := NewTargets([]string{dir})
			mustT(t, err)
			var got []string
			for _, x := range tg.List() {
				rel, err := filepath.Rel(dir, x.Socket)
				mustT(t, err)
				got = append(got, x.Name+"="+rel)
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("List = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPodDirectoriesComeAndGo: the directory is read on every call, so a
// pod's target appears once its socket does and goes with its directory.
func TestPodDirectoriesComeAndGo(t *testing.T) {
	pods := t.TempDir()
	tg, err := NewTargets([]string{pods})
	mustT(t, err)
	pod := filepath.Join(pods, "default_app-0")
	for _, tc := range []struct {
		name string
		step func()
		want string // the target Resolve("default_app-0") finds; "" for none
	}{
		{"no pod", func() {}, ""},
		{"directory only", func() { mustT(t, os.Mkdir(pod, 0o755)) }, ""},
		{"socket made", func() { mustT(t, os.WriteFile(filepath.Join(pod, podSocket), nil, 0o600)) }, filepath.Join(pod, podSocket)},
		{"pod deleted", func() { mustT(t, os.RemoveAll(pod)) }, ""},
	} {
		tc.step()
		got, err := tg.Resolve("default_app-0")
		switch {
		case tc.want == "" && !errors.Is(err, errUnknownTarget):
			t.Errorf("%s: Resolve = %+v, %v; want unknown target", tc.name, got, err)
		case tc.want != "" && (err != nil || got.Socket != tc.want):
			t.Errorf("%s: Resolve = %+v, %v; want socket %s", tc.name, got, err, tc.want)
		}
	}
}

// TestDiscoverSocket builds a fake /proc with a tailscaled process whose
// socket appears only after a while, as in a pod whose tailscaled starts
// after the sidecar.
func TestDiscoverSocket(t *testing.T) {
	proc := t.TempDir()
	mk := func(pid, comm string, cmdline ...string) string {
		d := filepath.Join(proc, pid)
		mustT(t, os.MkdirAll(filepath.Join(d, "root"), 0o755))
		mustT(t, os.WriteFile(filepath.Join(d, "comm"), []byte(comm+"\n"), 0o644))
		mustT(t, os.WriteFile(filepath.Join(d, "cmdline"), []byte(strings.Join(cmdline, "\x00")+"\x00"), 0o644))
		return filepath.Join(d, "root")
	}
	mk("1", "pause", "/pause")
	root := mk("42", "tailscaled", "/usr/local/bin/tailscaled", "--socket=/tmp/ts/custom.sock", "--statedir=/var/lib/ts")
	mustT(t, os.MkdirAll(filepath.Join(proc, "self"), 0o755))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	var got string
	var err error
	go func() {
		defer close(done)
		got, err = DiscoverSocket(ctx, t.Logf, proc, 20*time.Millisecond)
	}()
	time.Sleep(100 * time.Millisecond)
	sock := filepath.Join(root, "tmp/ts/custom.sock")
	mustT(t, os.MkdirAll(filepath.Dir(sock), 0o755))
	// Only a real socket counts, not a file of that name.
	l, lerr := net.Listen("unix", sock)
	if lerr != nil {
		t.Fatal(lerr)
	}
	defer l.Close()
	<-done
	if err != nil || got != sock {
		t.Fatalf("DiscoverSocket = %q, %v; want %q", got, err, sock)
	}

	// A usual path is found without a --socket argument.
	proc2 := t.TempDir()
	proc = proc2
	root2 := mk("7", "tailscaled", "tailscaled")
	def := filepath.Join(root2, "var/run/tailscale/tailscaled.sock")
	mustT(t, os.MkdirAll(filepath.Dir(def), 0o755))
	l2, err := net.Listen("unix", def)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if got, err := DiscoverSocket(ctx, t.Logf, proc2, time.Millisecond); err != nil || got != def {
		t.Errorf("default path: %q, %v", got, err)
	}

	// Nothing there: it keeps trying until the context ends.
	empty := t.TempDir()
	sctx, scancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer scancel()
	if _, err := DiscoverSocket(sctx, t.Logf, empty, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "no tailscaled process") {
		t.Errorf("empty proc: %v", err)
	}
}

func TestSocketArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tailscaled", "--socket=/a.sock"}, "/a.sock"},
		{[]string{"tailscaled", "-socket", "/b.sock"}, "/b.sock"},
		{[]string{"tailscaled", "--statedir", "socket"}, ""},
		{[]string{"tailscaled"}, ""},
	} {
		got := strings.Join(socketArgs(tc.args), ",")
		if got != tc.want {
			t.Errorf("socketArgs(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{AllowedTag: DefaultAllowedTag, HostnamePrefix: DefaultHostnamePrefix, Port: DefaultPort, Sockets: []string{DefaultSocket}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.AllowedTag = "tsymbiote-webui" }, "--allowed-tag"},
		{func(c *Config) { c.AllowedTag = "tag:a,tag:b" }, "--allowed-tag"},
		{func(c *Config) { c.Port = "http" }, "--port"},
		{func(c *Config) { c.Port = "70000" }, "--port"},
		{func(c *Config) { c.Hostname = "bad name" }, "--hostname"},
		{func(c *Config) { c.HostnamePrefix = "" }, "--hostname-prefix"},
		{func(c *Config) { c.Sockets = nil }, "--socket"},
		{func(c *Config) { c.ControlURL = "ftp://x" }, "control URL"},
		{func(c *Config) { c.GenerateAuth = true }, "no control plane credentials"},
		{func(c *Config) { c.GenerateAuth, c.AuthKey = true, "tskey-x" }, "TS_AUTHKEY"},
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate = %v, want an error naming %s", err, tc.want)
		}
	}
	c := ok
	if h := c.hostname(); !strings.HasPrefix(h, DefaultHostnamePrefix) || len(h) > 63 {
		t.Errorf("hostname() = %q", h)
	}
}

func TestIsTailscaled(t *testing.T) {
	for _, tc := range []struct {
		comm string
		args []string
		want bool
	}{
		{"tailscaled", nil, true},
		{"tailscaled-v1.10", []string{"/bin/tailscaled-v1.102.5"}, true},
		{"containerboot", []string{"/usr/local/bin/containerboot"}, true},
		{"exe", []string{"/usr/local/bin/tailscaled", "--state=mem:"}, true},
		{"tailscale", []string{"tailscale", "up"}, false},
		{"sh", []string{"sh", "-c", "tailscaled"}, false},
	} {
		if got := isTailscaled(tc.comm, tc.args); got != tc.want {
			t.Errorf("isTailscaled(%q, %q) = %v", tc.comm, tc.args, got)
		}
	}
}

// TestDiscoveredTargetFollowsRestart: a sidecar's tailscaled container that
// restarts runs under a new PID, so the socket found through /proc/<pid>/root
// moves; the target follows it instead of answering Unavailable for good.
func TestDiscoveredTargetFollowsRestart(t *testing.T) {
	proc := t.TempDir()
	start := func(pid string) (sock string, stop func()) {
		d := filepath.Join(proc, pid)
		sock = filepath.Join(d, "root", "var/run/tailscale/tailscaled.sock")
		mustT(t, os.MkdirAll(filepath.Dir(sock), 0o755))
		mustT(t, os.WriteFile(filepath.Join(d, "comm"), []byte("tailscaled\n"), 0o644))
		mustT(t, os.WriteFile(filepath.Join(d, "cmdline"), []byte("tailscaled\x00"), 0o644))
		l, err := net.Listen("unix", sock)
		mustT(t, err)
		return sock, func() { l.Close(); os.RemoveAll(d) }
	}
	first, stopFirst := start("13")
	var logged []string
	tg, err := NewDiscoveredTargets(func(f string, a ...any) { logged = append(logged, f) }, first, func() (string, error) {
		p, _, err := discoverOnce(proc)
		return p, err
	})
	mustT(t, err)
	for _, tc := range []struct {
		name string
		step func() string // changes the pod, returns the socket wanted
	}{
		{"running", func() string { return first }},
		// Between the kill and the restart, requests go to the old path
		// and fail (Unavailable).
		{"killed", func() string { stopFirst(); return first }},
		{"restarted", func() string { s, stop := start("40"); t.Cleanup(stop); return s }},
	} {
		want := tc.step()
		if got, err := tg.Resolve(""); err != nil || got.Socket != want {
			t.Errorf("%s: Resolve = %+v, %v; want socket %s", tc.name, got, err, want)
		}
	}
	if len(logged) != 1 {
		t.Errorf("logged %d moves, want 1: %q", len(logged), logged)
	}
}
