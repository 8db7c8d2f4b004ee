package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
)

// TestDemo runs the demo binary the way `make demo` does, with two
// tailscaled nodes and, as root, two CNI pods; checks that the WebUI sees
// every node and pings every peer from every host; then stops it with
// Ctrl-C (SIGINT) and checks that it left nothing behind.
func TestDemo(t *testing.T) {
	testkit.Integration(t)
	pods := 0
	if os.Geteuid() == 0 {
		pods = 2
	} else if testkit.UnderCI() {
		t.Fatal("the demo's CNI pods need root, and CI=true forbids leaving them out")
	} else {
		t.Log("not root: running the demo without its CNI pods")
	}
	bin := buildDemoBinaries(t)
	before := hostState(t)
	tmpBefore := demoDirs(t)

	run := startDemo(t, bin, 2, pods)
	if err := run.waitReady(4 * time.Minute); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(4 * time.Minute)
	url := run.url
	stop := run.stop
	want := []string{"demo-node-1", "demo-node-2", "tsymbiote-adapter-demo-node-1", "tsymbiote-adapter-demo-node-2", "tsymbiote-webui-demo"}
	for i := 1; i <= pods; i++ {
		want = append(want, fmt.Sprintf("demo-default-pod-%d", i), fmt.Sprintf("tsymbiote-adapter-pod-%d", i))
	}
	hosts := 2 + pods
	// The WebUI lists adapters as they join: wait until it sees them all.
	var graph struct {
		Nodes []struct {
			Name   string `json:"name"`
			Online bool   `json:"online"`
		} `json:"nodes"`
		Hosts []json.RawMessage `json:"hosts"`
	}
	for {
		getJSON(t, url+"/api/graph", &graph)
		seen := map[string]bool{}
		for _, n := range graph.Nodes {
			seen[n.Name] = n.Online
		}
		missing := []string{}
		for _, w := range want {
			if !seen[w] {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 && len(graph.Hosts) == hosts {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("graph after 4 minutes: %d hosts (want %d), missing or offline: %v", len(graph.Hosts), hosts, missing)
		}
		time.Sleep(time.Second)
	}
	t.Logf("graph: %d nodes, %d hosts with adapters", len(graph.Nodes), len(graph.Hosts))

	// Ping every peer from every host until every pair answers: a node
	// that joined seconds ago (the WebUI joins last) can miss the first
	// round while its peers learn of it.
	pairs := hosts * (len(graph.Nodes) - 1)
	var (
		total  int
		failed []string
	)
	for attempt := 1; ; attempt++ {
		var answered int
		total, answered, failed = pingAll(t, url, deadline.Add(time.Minute))
		t.Logf("ping all, round %d: %d of %d pairs answered (%d hosts × %d peers = %d)", attempt, answered, total, hosts, len(graph.Nodes)-1, pairs)
		if (len(failed) == 0 && total == pairs) || attempt == 6 {
			break
		}
		time.Sleep(5 * time.Second)
	}
	if total != pairs {
		t.Errorf("fan-out total %d, want %d (hosts × peers)", total, pairs)
	}
	for _, f := range failed {
		t.Errorf("ping %s", f)
	}

	stop()
	if after := hostState(t); after != before {
		t.Errorf("host network changed by the demo:\nbefore: %s\nafter:  %s", before, after)
	}
	if after := demoDirs(t); after != tmpBefore {
		t.Errorf("demo left directories behind: before %q, after %q", tmpBefore, after)
	}
}

// demoRun is one running demo process.
type demoRun struct {
	t       *testing.T
	proc    *testkit.Process
	url     string
	ready   string
	stopped bool
}

// startDemo starts the demo binary with nodes tailscaled nodes and pods CNI
// pods. It is stopped with Ctrl-C when the test ends, if still running.
func startDemo(t *testing.T, bin string, nodes, pods int) *demoRun {
	t.Helper()
	port := strconv.Itoa(testkit.FreePort(t))
	r := &demoRun{t: t, url: "http://127.0.0.1:" + port, ready: filepath.Join(t.TempDir(), "ready")}
	cmd := exec.Command(filepath.Join(bin, "tsymbiote-demo"), "--bin", bin, "--nodes", fmt.Sprint(nodes),
		"--cni-pods", fmt.Sprint(pods), "--listen", "127.0.0.1:"+port, "--ready-file", r.ready)
	var err error
	if r.proc, err = testkit.Launch(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("demo (pid %d) output:\n%s", r.proc.PID(), r.proc.Output())
		}
	})
	return r
}

// waitReady waits until the demo says it is up.
func (r *demoRun) waitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		if b, err := os.ReadFile(r.ready); err == nil && len(b) > 0 {
			return nil
		}
		select {
		case <-r.proc.Done():
			r.stopped = true
			return fmt.Errorf("demo exited before it was up: %w", r.proc.Err())
		case <-deadline:
			return fmt.Errorf("demo not up after %v", timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop sends Ctrl-C (SIGINT) and waits for the demo to clean up and exit.
func (r *demoRun) stop() {
	if r.stopped {
		return
	}
	r.stopped = true
	_ = r.proc.Signal(syscall.SIGINT)
	select {
	case <-r.proc.Done():
		if err := r.proc.Err(); err != nil {
			r.t.Errorf("demo exited with %v after Ctrl-C", err)
		}
	case <-time.After(2 * time.Minute):
		r.proc.Kill()
		r.t.Errorf("demo did not stop within 2 minutes of Ctrl-C; killed (%v)", r.proc.Err())
	}
}

// kill kills the demo with SIGKILL, which it cannot clean up after.
func (r *demoRun) kill() {
	r.stopped = true
	r.proc.Kill()
	r.t.Logf("demo %d killed: %v", r.proc.PID(), r.proc.Err())
}

// TestMain removes the binaries the tests built.
func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// buildDemoBinaries builds what `make binaries` builds for the demo (once
// for all tests) and links them, with the pinned reference CNI plugins,
// into one bin dir named as the demo expects.
func buildDemoBinaries(t *testing.T) string {
	t.Helper()
	links := map[string]string{
		"tsymbiote-demo":       testkit.BuildOnce(t, "tsymbiote.dhouti.dev/hack/demo"),
		"tsymbiote-adapter":    testkit.BuildOnce(t, "tsymbiote.dhouti.dev/adapter/cmd/tsymbiote-adapter"),
		"tsymbiote-webui":      testkit.BuildOnce(t, "tsymbiote.dhouti.dev/webui/cmd/tsymbiote-webui"),
		"tailscale-cni":        testkit.BuildOnce(t, "tsymbiote.dhouti.dev/cni/cmd/tailscale-cni"),
		"tailscale-cni-daemon": testkit.BuildOnce(t, "tsymbiote.dhouti.dev/cni/cmd/tailscale-cni-daemon", "-tags", "ts_omit_portmapper"),
		"cni-ptp":              testkit.Binary(t, "cni-ptp"),
		"cni-host-local":       testkit.Binary(t, "cni-host-local"),
	}
	bin := t.TempDir()
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// hostState summarises what the demo may touch on the host: namespaces,
// links, policy rules, and the forwarding sysctls.
func hostState(t *testing.T) string {
	t.Helper()
	var parts []string
	for _, args := range [][]string{{"netns", "list"}, {"-o", "link", "show"}, {"rule", "show"}, {"-6", "rule", "show"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		var names []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(l)
			if len(f) > 1 && args[0] == "-o" {
				names = append(names, f[1])
			} else if len(f) > 0 {
				names = append(names, strings.Join(f, " "))
			}
		}
		parts = append(parts, fmt.Sprintf("%v=%v", args, names))
	}
	for _, p := range []string{ipv4Forward, ipv6Forward} {
		b, _ := os.ReadFile(p)
		parts = append(parts, p+"="+strings.TrimSpace(string(b)))
	}
	return strings.Join(parts, "; ")
}

func demoDirs(t *testing.T) string {
	var dirs []string
	// Every name the demo or its children (tailscaled, adapters, the WebUI)
	// would give a temporary directory.
	for _, pattern := range []string{"tsymbiote-*", "tsd-*"} {
		m, err := filepath.Glob(filepath.Join(os.TempDir(), pattern))
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, m...)
	}
	return strings.Join(dirs, ",")
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// pingAll runs one "ping every peer from every host" fan-out to its end and
// returns its total, the pairs that answered, and the failures.
func pingAll(t *testing.T, url string, deadline time.Time) (total, answered int, failed []string) {
	t.Helper()
	var started struct {
		ID string `json:"id"`
	}
	// As the WebUI's own page posts it: the WebUI refuses a POST without
	// its Origin and CSRF header.
	req, err := http.NewRequest(http.MethodPost, url+"/api/fanouts", strings.NewReader(`{"kind":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", url)
	req.Header.Set("X-Tsymbiote-Csrf", "1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(res.Body).Decode(&started); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	var fan struct {
		Total, Completed int
		Done             bool
		Results          []struct {
			HostName, PeerName, Error string
			OK                        bool
		}
	}
	for {
		getJSON(t, url+"/api/fanouts/"+started.ID, &fan)
		if fan.Done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fan-out not done: %d/%d", fan.Completed, fan.Total)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, r := range fan.Results {
		if r.OK {
			answered++
		} else {
			failed = append(failed, fmt.Sprintf("%s -> %s: %s", r.HostName, r.PeerName, r.Error))
		}
	}
	return fan.Total, answered, failed
}
