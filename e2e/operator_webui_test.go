package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/tsnet"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/proto/contract"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// deployWebUI creates the TSymbiote with Headscale credentials, in a
// namespace that enforces the restricted Pod Security Standard, and waits
// for the operator to report it Ready: the WebUI StatefulSet has a ready
// replica, which its readiness probe says once the WebUI serves on the
// tailnet.
func (r *operatorRun) deployWebUI(ctx context.Context) {
	r.apply(ctx, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
  # The WebUI needs no privilege: it runs under the restricted standard.
  labels: {pod-security.kubernetes.io/enforce: restricted}
---
apiVersion: v1
kind: Secret
metadata: {name: %[2]s, namespace: %[1]s}
stringData:
  HEADSCALE_URL: %[3]q
  HEADSCALE_API_KEY: %[4]q
---
apiVersion: tsymbiote.dhouti.dev/v1alpha1
kind: TSymbiote
metadata: {name: %[5]s, namespace: %[1]s}
spec:
  authSecretRef: {name: %[2]s}
  image: %[6]s
  allowedUsers: [%[7]s]
  pod:
    env:
      # The node's Headscale serves its DERP over plain HTTP.
      - {name: TS_DEBUG_USE_DERP_HTTP, value: "1"}
`, webuiNamespace, webuiAuth, r.c.Headscale.URL, r.c.Headscale.APIKey, webuiName, webuiImage, headscaletest.TagTest))
	r.kubectl(ctx, "-n", webuiNamespace, "wait", "--for=condition=Ready", "tsymbiote/"+webuiName, "--timeout=240s")
	r.t.Log(strings.TrimSpace(r.kubectl(ctx, "-n", webuiNamespace, "get", "tsymbiote", webuiName, "-o", "wide")))
}

// waitDiscovery reaches the WebUI through the browser's tailnet node and
// waits until its graph lists the sidecar adapter, online, with the pod's
// tailscaled as a host, and the CNI node's adapter, online, with one
// target and host per CNI pod. A node the WebUI does not allow (the
// adapter caller, tagged tag:tsymbiote-webui) is refused.
func (r *operatorRun) waitDiscovery(ctx context.Context) {
	r.browser = r.tsnetNode(browserHostname, headscaletest.TagTest)
	peer, err := headscaletest.WaitForPeer(ctx, r.browser, webuiName)
	if err != nil {
		r.t.Fatal(err)
	}
	target := fmt.Sprintf("%s:%d", peer.TailscaleIPs[0], contract.Port)
	r.webURL = proxyTo(r.t, r.browser, target)
	r.t.Logf("WebUI %s (%s) proxied on %s", webuiName, target, r.webURL)

	if code, err := getStatus(ctx, r.caller, "http://"+target+"/api/me"); err != nil || code != http.StatusForbidden {
		r.t.Errorf("WebUI answered %s (tag:tsymbiote-webui, not allowed) with %d, %v; want 403", callerHostname, code, err)
	}
	var g graph
	waitFor(ctx, r.t, "the WebUI's graph to show both adapters and their hosts", func() error {
		g = graph{}
		if err := getJSON(ctx, r.webURL+"/api/graph?refresh=1", &g); err != nil {
			return err
		}
		i := slices.IndexFunc(g.Adapters, func(a graphAdapter) bool { return a.Name == r.adapter })
		if i < 0 || !g.Adapters[i].Online {
			return fmt.Errorf("adapters %+v, errors %v", g.Adapters, g.Errors)
		}
		if !slices.ContainsFunc(g.Hosts, func(h graphHost) bool { return h.Name == appHostname }) {
			return fmt.Errorf("hosts %+v, errors %v", g.Hosts, g.Errors)
		}
		return r.checkCNIInGraph(g)
	})
	var names []string
	for _, n := range g.Nodes {
		names = append(names, n.Name)
	}
	r.t.Logf("WebUI graph: %d nodes %v, %d edges, %d hosts, %d adapters", len(g.Nodes), names, len(g.Edges), len(g.Hosts), len(g.Adapters))
	for _, a := range g.Adapters {
		var hosts []string
		for _, h := range g.Hosts {
			if h.Adapter == a.Name {
				hosts = append(hosts, h.Target+"="+h.Name)
			}
		}
		r.t.Logf("WebUI adapter %s: online %v, %d targets, hosts %v", a.Name, a.Online, a.Targets, hosts)
	}
}

// deleteWebUI deletes the TSymbiote and waits for its StatefulSet to be
// gone and for the WebUI's node to have left Headscale (the operator's
// finalizer deletes it).
func (r *operatorRun) deleteWebUI(ctx context.Context) {
	r.kubectl(ctx, "-n", webuiNamespace, "delete", "tsymbiote", webuiName, "--wait=true", "--timeout=120s")
	waitFor(ctx, r.t, "the WebUI StatefulSet to be deleted", func() error {
		out, err := r.c.Kubectl(ctx, "-n", webuiNamespace, "get", "statefulset,pods", "-o", "name")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("still there: %s", strings.Fields(out))
		}
		return nil
	})
	waitFor(ctx, r.t, "the WebUI node to leave Headscale", func() error {
		devs, err := r.cp.ListDevices(ctx, controlplane.ListOptions{Tag: contract.TagWebUI})
		if err != nil {
			return err
		}
		for _, d := range devs {
			if d.Hostname == webuiName {
				return fmt.Errorf("node %s (%s) still there", d.ID, d.Name)
			}
		}
		return nil
	})
}

// graph is the part of the WebUI's GET /api/graph the test reads.
type graph struct {
	Nodes    []struct{ Name string } `json:"nodes"`
	Edges    []json.RawMessage       `json:"edges"`
	Hosts    []graphHost             `json:"hosts"`
	Adapters []graphAdapter          `json:"adapters"`
	Errors   []string                `json:"errors"`
}

type graphHost struct {
	Name    string `json:"name"`
	Adapter string `json:"adapter"`
	Target  string `json:"target"`
	Error   string `json:"error,omitempty"`
}

type graphAdapter struct {
	Name    string `json:"name"`
	Online  bool   `json:"online"`
	Error   string `json:"error,omitempty"`
	Targets int    `json:"targets"`
}

func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, res.Status, b)
	}
	return json.Unmarshal(b, v)
}

// getStatus is the status code of a GET from ts over the tailnet.
func getStatus(ctx context.Context, ts *tsnet.Server, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	res, err := ts.HTTPClient().Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

// proxyTo listens on 127.0.0.1 and forwards every connection to target
// over ts's tailnet, so that a browser on the host reaches the WebUI as
// ts. It returns the listener's URL and stops with the test.
func proxyTo(t *testing.T, ts *tsnet.Server, target string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { forward(ctx, ts, c, target) })
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// forward copies between c and a tailnet connection to target until
// either side closes or ctx ends.
func forward(ctx context.Context, ts *tsnet.Server, c net.Conn, target string) {
	defer c.Close()
	up, err := ts.Dial(ctx, "tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

// waitFor polls check every half second until it returns nil, failing t
// with the last error when ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, check func() error) {
	t.Helper()
	if err := poll(ctx, 500*time.Millisecond, check); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// cleanup removes everything the test made, in an order that lets each
// step succeed: the TSymbiote and the app pods while the operator still
// runs to release their finalizers, then the chart and its CRD (which helm
// leaves behind), then whatever nodes of the test's are left in Headscale.
// A finalizer the operator did not release within a minute is removed by
// hand, so that the next test on the node starts clean.
func (r *operatorRun) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	// The operator's log of the pod's deletion, and everything on failure.
	r.saveLogs(ctx, "end-")
	if r.t.Failed() {
		r.logTail()
	}
	var errs []error
	kubectl := func(args ...string) {
		if _, err := r.c.Kubectl(ctx, args...); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := r.c.Kubectl(ctx, "-n", webuiNamespace, "delete", "tsymbiote", "--all", "--wait=true", "--timeout=60s"); err != nil && !strings.Contains(err.Error(), "the server doesn't have a resource type") {
		r.t.Logf("cleanup: %v; removing the finalizer by hand", err)
		_, _ = r.c.Kubectl(ctx, "-n", webuiNamespace, "patch", "tsymbiote", webuiName, "--type=json", "-p", `[{"op":"remove","path":"/metadata/finalizers"}]`)
	}
	for _, ns := range []string{appNamespace, webuiNamespace} {
		if _, err := r.c.Kubectl(ctx, "delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=60s"); err != nil {
			r.t.Logf("cleanup: %v; removing pod finalizers by hand", err)
			r.dropFinalizers(ctx, ns)
			kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=60s")
		}
	}
	if _, err := r.c.Helm(ctx, "status", opRelease, "--namespace", opNamespace); err == nil {
		if _, err := r.c.Helm(ctx, "uninstall", opRelease, "--namespace", opNamespace, "--wait", "--timeout", "2m"); err != nil {
			errs = append(errs, err)
		}
	}
	kubectl("delete", "crd", crdName, "--ignore-not-found", "--wait=true", "--timeout=60s")
	kubectl("delete", "namespace", opNamespace, "--ignore-not-found", "--wait=true", "--timeout=60s")
	errs = append(errs, r.deleteNodes(ctx))
	if err := errors.Join(errs...); err != nil {
		r.t.Errorf("cleanup: %v", err)
	}
	r.t.Logf("step %-32s done in %5.1fs", "cleanup", time.Since(start).Seconds())
}

// dropFinalizers removes the adapter finalizer of every pod in ns.
func (r *operatorRun) dropFinalizers(ctx context.Context, ns string) {
	out, _ := r.c.Kubectl(ctx, "-n", ns, "get", "pods", "-o", "name")
	for _, p := range strings.Fields(out) {
		_, _ = r.c.Kubectl(ctx, "-n", ns, "patch", p, "--type=merge", "-p", `{"metadata":{"finalizers":null}}`)
	}
}

// deleteNodes deletes the nodes the test made or caused that are still in
// Headscale (the app's tailscaled, which has no one to log it out, and any
// the operator did not delete), so that the next test's tailnet holds only
// its own.
func (r *operatorRun) deleteNodes(ctx context.Context) error {
	mine := []string{appHostname, r.adapter, webuiName, callerHostname, browserHostname}
	if r.cniAdapter != "" {
		mine = append(mine, r.cniAdapter)
	}
	devs, err := r.cp.ListDevices(ctx, controlplane.ListOptions{})
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range devs {
		if d.Hostname == "" || !slices.Contains(mine, d.Hostname) {
			continue
		}
		if d.Hostname != appHostname {
			r.t.Logf("cleanup: node %s (%s) was still in Headscale", d.Hostname, d.ID)
		}
		if err := r.cp.DeleteDevice(ctx, d.ID); err != nil && !errors.Is(err, controlplane.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// artifactDir is bin/test-artifacts/<test>, emptied of an earlier run's
// files.
func artifactDir(t *testing.T) string {
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "bin", "test-artifacts", t.Name())
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// saveLogs writes what a run needs to be understood into the artefacts,
// each file's name starting with prefix:
// the pods, the events, the operator's, the app pod's (tailscaled and
// the sidecar), the WebUI's and the CNI daemon pods' (daemon and adapter)
// logs.
func (r *operatorRun) saveLogs(ctx context.Context, prefix string) {
	logs := map[string][]string{
		"pods":     {"get", "pods", "-A", "-o", "wide"},
		"events":   {"get", "events", "-A", "--sort-by=.lastTimestamp"},
		"operator": {"-n", opNamespace, "logs", "deployment/" + opRelease, "--tail=-1"},
		"app-pod":  {"-n", appNamespace, "get", "pod", appPod, "-o", "yaml"},
		"app":      {"-n", appNamespace, "logs", appPod, "--all-containers", "--prefix", "--tail=-1"},
		"webui":    {"-n", webuiNamespace, "logs", webuiName + "-0", "--tail=-1"},
		"webui-cr": {"-n", webuiNamespace, "get", "tsymbiote,statefulset,pod", "-o", "yaml"},
	}
	maps.Copy(logs, r.cniLogs())
	for name, args := range logs {
		out, err := r.c.Kubectl(ctx, args...)
		if err != nil {
			out += "\n" + err.Error()
		}
		if err := os.WriteFile(filepath.Join(r.out, "logs", prefix+name+".log"), []byte(out), 0o644); err != nil {
			r.t.Log(err)
		}
	}
}

// logTail logs the end of each saved log, for a failed run.
func (r *operatorRun) logTail() {
	files, _ := filepath.Glob(filepath.Join(r.out, "logs", "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		r.t.Logf("%s (last lines):\n%s", f, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}
