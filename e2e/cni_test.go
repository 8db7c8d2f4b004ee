package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/cluster"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// The test app's image and port (hack/images), and the tailscale-cni
// chart's names with its defaults.
const (
	testappImage = "tsymbiote/testapp:0.1.0"
	testappPort  = 8080
	cniRelease   = "tscni"
	cniShim      = "/opt/cni/bin/tailscale-cni"
	podTag       = "tag:k8s-pod"
	magicDNS     = "tsymbiote.test" // the harness's Headscale base domain
	clusterName  = "k8s"            // the chart's clusterName
	stateDir     = "/var/lib/tailscale-cni"
	runDir       = "/var/run/tailscale-cni"
)

// cniTest is one run of TestCNIChart: the node, its own namespace, and
// what the host looked like before.
type cniTest struct {
	t  *testing.T
	c  *cluster.Cluster
	ns string
	// Before the install.
	conflist               []byte
	shimBefore             bool
	stateBefore, runBefore bool
	netnsBefore            []string
	// The app's pods, by name, as they came up.
	pods map[string]podNet
}

// TestCNIChart installs the tailscale-cni chart with helm on the node and
// checks, through kubelet, containerd and the shim, that pods get their
// own tailnet nodes, keep them across a daemon restart, lose them when
// scaled away, and that helm uninstall gives the node back its conflist.
func TestCNIChart(t *testing.T) {
	c := node(t)
	ct := &cniTest{t: t, c: c, ns: "cni-e2e-" + randHex(3)}
	ct.snapshotHost()
	t.Cleanup(ct.cleanup)

	ct.install(nil)
	ct.deployApp(3)
	ct.fetchOverTailnet()
	ct.reachFromOutside()
	ct.checkHeadscaleNames()
	ct.restartDaemon()
	ct.scaleToZero()
	ct.uninstall()
	ct.podAfterUninstall()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func (ct *cniTest) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	ct.t.Cleanup(cancel)
	return ctx
}

func (ct *cniTest) snapshotHost() {
	b, err := os.ReadFile(cluster.ConflistPath())
	if err != nil {
		ct.t.Fatal(err)
	}
	ct.conflist = b
	ct.shimBefore = exists(cniShim)
	ct.stateBefore, ct.runBefore = exists(stateDir), exists(runDir)
	ct.netnsBefore = netnsNames()
	if ct.shimBefore || bytes.Contains(b, []byte("tailscale-cni")) {
		ct.t.Fatalf("the node already has tailscale-cni (shim %v); conflist:\n%s", ct.shimBefore, b)
	}
}

// install runs helm install with the harness's Headscale, and the values
// in extra beside it, and waits for the daemon to be ready and chained.
func (ct *cniTest) install(extra map[string]any) {
	t, c := ct.t, ct.c
	s := startStep(t, "helm install")
	defer s.done()
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The API key goes in a file, not on helm's command line, which error
	// messages repeat.
	v := map[string]any{"controlPlane": map[string]string{
		"headscaleURL": c.Headscale.URL, "headscaleAPIKey": c.Headscale.APIKey,
	}}
	maps.Copy(v, extra)
	values, _ := json.Marshal(v)
	vf := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vf, values, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := ct.ctx(4 * time.Minute)
	out, err := c.Helm(ctx, "install", cniRelease, filepath.Join(root, "charts", "tailscale-cni"),
		"-n", ct.ns, "--create-namespace", "-f", vf, "--wait", "--timeout", "3m")
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, ct.describeDaemon(ctx))
	}
	t.Logf("helm install:\n%s", out)
	// helm's --wait counts a DaemonSet with maxUnavailable 1 and one node
	// as ready with no pod ready.
	if _, err := c.Kubectl(ctx, "rollout", "status", "-n", ct.ns, "daemonset/"+cniRelease, "--timeout=3m"); err != nil {
		t.Fatalf("the daemon did not become ready: %v\n%s", err, ct.describeDaemon(ctx))
	}
	out, err = c.Kubectl(ctx, "get", "daemonset,pods", "-n", ct.ns, "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the release:\n%s", out)
	conf, err := os.ReadFile(cluster.ConflistPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after install:\n%s", cluster.ConflistPath(), conf)
	var doc struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(conf, &doc); err != nil {
		t.Fatal(err)
	}
	if n := len(doc.Plugins); n < 2 || doc.Plugins[n-1]["type"] != "tailscale-cni" {
		t.Fatalf("tailscale-cni is not chained last into %s", cluster.ConflistPath())
	}
	if !exists(cniShim) {
		t.Fatalf("install-cni did not install %s", cniShim)
	}
}

// describeDaemon is the daemon's pods and log, for a failure message.
func (ct *cniTest) describeDaemon(ctx context.Context) string {
	pods, _ := ct.c.Kubectl(ctx, "get", "pods", "-n", ct.ns, "-o", "wide")
	logs, _ := ct.c.Kubectl(ctx, "logs", "-n", ct.ns, "-l", "app.kubernetes.io/instance="+cniRelease, "--all-containers", "--tail=40")
	ev, _ := ct.c.Kubectl(ctx, "get", "events", "-n", ct.ns, "--sort-by=.lastTimestamp")
	return fmt.Sprintf("pods:\n%s\nlogs:\n%s\nevents:\n%s", pods, logs, ev)
}

const appManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: testapp}
spec:
  replicas: %d
  selector: {matchLabels: {app: testapp}}
  template:
    metadata: {labels: {app: testapp}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: testapp
          image: ` + testappImage + `
          imagePullPolicy: Never
          ports: [{containerPort: 8080}]
          readinessProbe:
            httpGet: {path: /healthz, port: 8080}
            periodSeconds: 2
`

// deployApp runs replicas test app pods and checks that each has ts0 with
// a tailnet IPv4 and IPv6 address in its netns.
func (ct *cniTest) deployApp(replicas int) {
	t, c := ct.t, ct.c
	s := startStep(t, fmt.Sprintf("%d app pods with ts0", replicas))
	defer s.done()
	ctx := ct.ctx(4 * time.Minute)
	if _, err := c.KubectlIn(ctx, strings.NewReader(fmt.Sprintf(appManifest, replicas)), "apply", "-n", ct.ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(ctx, "rollout", "status", "-n", ct.ns, "deployment/testapp", "--timeout=3m"); err != nil {
		pods, _ := c.Kubectl(ctx, "describe", "pods", "-n", ct.ns, "-l", "app=testapp")
		t.Fatalf("app did not come up: %v\n%s\n%s\n%s", err, out, pods, ct.describeDaemon(ctx))
	}
	pods, err := ct.appPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != replicas {
		t.Fatalf("app pods %v, want %d", pods, replicas)
	}
	ct.pods = pods
	for _, name := range ct.podNames() {
		p := pods[name]
		t.Logf("pod %s: netns %s, eth0 %s, ts0 %v", name, p.netns, p.eth0, p.ts0)
		if !p.hasTS || !p.tailnet4().IsValid() || !p.tailnet6().IsValid() {
			t.Errorf("pod %s has no ts0 with a 100.x and an fd7a: address: %+v", name, p)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// appPods are the app's running pods by name, with what their netns holds.
func (ct *cniTest) appPods(ctx context.Context) (map[string]podNet, error) {
	out, err := ct.c.Kubectl(ctx, "get", "pods", "-n", ct.ns, "-l", "app=testapp", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}`)
	if err != nil {
		return nil, err
	}
	nets, err := podNets(ctx)
	if err != nil {
		return nil, err
	}
	pods := map[string]podNet{}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 { // no IP yet, or being deleted
			continue
		}
		ip, err := netip.ParseAddr(f[1])
		if err != nil {
			return nil, fmt.Errorf("pod %s IP %q: %w", f[0], f[1], err)
		}
		p, ok := nets[ip]
		if !ok {
			return nil, fmt.Errorf("no netns holds pod %s's IP %s", f[0], ip)
		}
		pods[f[0]] = p
	}
	return pods, nil
}

func (ct *cniTest) podNames() []string {
	names := make([]string, 0, len(ct.pods))
	for n := range ct.pods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// fetchSize is what one pod fetches from another: big enough to take many
// WireGuard packets.
const fetchSize = 4 << 20

func patternSum(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fetchOverTailnet has pod A fetch pod B's bytes over B's 100.x and fd7a:
// addresses, and checks length and SHA-256.
func (ct *cniTest) fetchOverTailnet() {
	t := ct.t
	s := startStep(t, "pod to pod over the tailnet")
	defer s.done()
	ctx := ct.ctx(2 * time.Minute)
	names := ct.podNames()
	a, b := ct.pods[names[0]], ct.pods[names[1]]
	want := patternSum(fetchSize)
	for _, dst := range []netip.Addr{b.tailnet4(), b.tailnet6()} {
		target := tailnetURL(dst, fmt.Sprintf("/bytes/%d", fetchSize))
		var r *fetchResult
		err := poll(ctx, 500*time.Millisecond, func() (err error) {
			r, err = podFetch(ctx, a.eth0, target, 10*time.Second)
			return err
		})
		if err != nil {
			t.Fatalf("%s fetching %s: %v", names[0], target, err)
		}
		t.Logf("%s fetched %s: %d bytes in %.2fs, sha256 %s", names[0], target, r.Bytes, r.Seconds, r.SHA256)
		if r.Bytes != fetchSize || r.SHA256 != want {
			t.Errorf("got %d bytes, sha256 %s; want %d, %s", r.Bytes, r.SHA256, fetchSize, want)
		}
	}
}

// nodeName is the tailnet hostname the daemon gives a pod.
func (ct *cniTest) nodeName(pod string) string { return clusterName + "-" + ct.ns + "-" + pod }

// reachFromOutside joins a tsnet node to the Headscale and has it reach a
// pod by its MagicDNS name.
func (ct *cniTest) reachFromOutside() {
	t, c := ct.t, ct.c
	s := startStep(t, "tsnet node to a pod by MagicDNS")
	defer s.done()
	hostname := "cni-e2e-outside-" + randHex(2)
	// Registered before NewNode's own cleanup, so it runs after the node
	// is closed: the node leaves Headscale with the test.
	t.Cleanup(func() { ct.deleteHeadscaleNodes(hostname) })
	ctx := ct.ctx(time.Minute)
	// A user's node, not a tagged one: nothing outside the cluster should
	// carry the pods' tag.
	key, err := c.Headscale.UserAuthKey(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := c.Headscale.NewNode(t, headscaletest.NodeOptions{Hostname: hostname, AuthKey: key, Ephemeral: true})
	pod := ct.podNames()[2]
	name := ct.nodeName(pod)
	if _, err := headscaletest.WaitForPeer(ctx, ts, name); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s.%s:%d/echo", name, magicDNS, testappPort)
	var echo struct {
		Hostname   string `json:"hostname"`
		RemoteAddr string `json:"remoteAddr"`
	}
	err = poll(ctx, 500*time.Millisecond, func() error {
		resp, err := ts.HTTPClient().Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, body)
		}
		return json.Unmarshal(body, &echo)
	})
	if err != nil {
		t.Fatalf("GET %s from tsnet node %s: %v", url, hostname, err)
	}
	t.Logf("tsnet node %s reached %s: pod %s answered, saw the caller as %s", hostname, url, echo.Hostname, echo.RemoteAddr)
	if echo.Hostname != pod {
		t.Errorf("answered by %q, want pod %s", echo.Hostname, pod)
	}
}

// deleteHeadscaleNodes removes the nodes named so from Headscale.
func (ct *cniTest) deleteHeadscaleNodes(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp, err := controlPlaneOf(ct.c, ct.t.Logf)
	if err != nil {
		ct.t.Errorf("cleanup: %v", err)
		return
	}
	nodes, err := cp.ListDevices(ctx, controlplane.ListOptions{})
	if err != nil {
		ct.t.Errorf("cleanup: %v", err)
		return
	}
	for _, n := range nodes {
		if n.Name == name || n.Hostname == name {
			if err := cp.DeleteDevice(ctx, n.ID); err != nil {
				ct.t.Errorf("cleanup: %v", err)
			}
		}
	}
}

// checkHeadscaleNames checks that Headscale holds one node per pod, named
// {cluster}-{namespace}-{pod} and tagged with the chart's tag.
func (ct *cniTest) checkHeadscaleNames() {
	t := ct.t
	s := startStep(t, "headscale node names and tags")
	defer s.done()
	nodes, err := podNodes(ct.ctx(30*time.Second), ct.c, clusterName+"-"+ct.ns+"-")
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range ct.podNames() {
		n, ok := nodes[ct.nodeName(pod)]
		if !ok {
			t.Errorf("headscale has no node %s; it has %v", ct.nodeName(pod), slices.Collect(maps.Keys(nodes)))
			continue
		}
		t.Logf("headscale node %s: id %s, tags %v, addresses %v, online %v", n.Name, n.ID, n.Tags, n.Addresses, n.Online)
		if !slices.Contains(n.Tags, podTag) {
			t.Errorf("node %s has tags %v, want %s", n.Name, n.Tags, podTag)
		}
		for _, a := range ct.pods[pod].ts0 {
			if !slices.Contains(n.Addresses, a.Addr()) {
				t.Errorf("node %s has addresses %v; the pod's ts0 has %s", n.Name, n.Addresses, a)
			}
		}
	}
	if len(nodes) != len(ct.pods) {
		t.Errorf("headscale has %d nodes of this namespace, want %d", len(nodes), len(ct.pods))
	}
}

// daemonPod is the name of the DaemonSet's running pod.
func (ct *cniTest) daemonPod(ctx context.Context) (string, error) {
	out, err := ct.c.Kubectl(ctx, "get", "pods", "-n", ct.ns, "-l", "app.kubernetes.io/instance="+cniRelease, "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}`)
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 1 {
			return f[0], nil
		}
	}
	return "", fmt.Errorf("no running daemon pod in %s: %q", ct.ns, out)
}

// restartDaemon deletes the daemon's pod while the app runs, and measures
// how long pod-to-pod traffic over the tailnet takes to come back.
func (ct *cniTest) restartDaemon() {
	t, c := ct.t, ct.c
	s := startStep(t, "daemon pod restart")
	defer s.done()
	ctx := ct.ctx(4 * time.Minute)
	old, err := ct.daemonPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chained, _ := os.ReadFile(cluster.ConflistPath())
	names := ct.podNames()
	a, b := ct.pods[names[0]], ct.pods[names[1]]
	target := tailnetURL(b.tailnet4(), "/bytes/65536")
	logs := followLogs(ctx, c, ct.ns, old)

	start := time.Now()
	if _, err := c.Kubectl(ctx, "delete", "pod", "-n", ct.ns, old, "--wait=false"); err != nil {
		t.Fatal(err)
	}
	// A fetch gives up after a second, so that an outage shows as failures
	// rather than as one fetch riding it out on TCP retransmissions.
	var firstFailure, oldGone time.Duration
	failures := 0
	var lastErr error
	err = poll(ctx, 200*time.Millisecond, func() error {
		if oldGone == 0 {
			if _, err := c.Kubectl(ctx, "get", "pod", "-n", ct.ns, old); err != nil && strings.Contains(err.Error(), "NotFound") {
				oldGone = time.Since(start)
			}
		}
		_, err := podFetch(ctx, a.eth0, target, time.Second)
		if err != nil {
			lastErr = err
			if failures == 0 {
				firstFailure = time.Since(start)
			}
			failures++
			return err
		}
		if oldGone == 0 {
			return errors.New("the old daemon still runs")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("traffic never resumed after the daemon's pod was deleted: %v\n%s", err, ct.describeDaemon(ctx))
	}
	resumed := time.Since(start)
	outage := "no fetch failed"
	if failures > 0 {
		outage = fmt.Sprintf("%d fetches failed from %.1fs on (last: %v)", failures, firstFailure.Seconds(), lastErr)
	}
	t.Logf("daemon pod %s deleted: old pod gone at %.1fs; %s; tailnet traffic from %s to %s resumed %.1fs after the delete",
		old, oldGone.Seconds(), outage, names[0], b.tailnet4(), resumed.Seconds())
	checkHook(t, logs, "keeping tailscale-cni chained")
	if _, err := c.Kubectl(ctx, "rollout", "status", "-n", ct.ns, "daemonset/"+cniRelease, "--timeout=2m"); err != nil {
		t.Fatal(err)
	}
	t.Logf("daemon ready again %.1fs after the delete", time.Since(start).Seconds())
	if now, _ := os.ReadFile(cluster.ConflistPath()); !bytes.Equal(now, chained) {
		t.Errorf("the restart changed the conflist:\n%s", now)
	}
	pods, err := ct.appPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		p := pods[name]
		if !slices.Equal(p.ts0, ct.pods[name].ts0) {
			t.Errorf("pod %s ts0 was %v, now %v", name, ct.pods[name].ts0, p.ts0)
		}
		next := ct.pods[names[(i+1)%len(names)]]
		r, err := podFetch(ctx, p.eth0, tailnetURL(next.tailnet4(), "/bytes/65536"), 10*time.Second)
		if err != nil {
			t.Errorf("after the restart, %s cannot fetch from %s: %v", name, next.tailnet4(), err)
			continue
		}
		t.Logf("after the restart: pod %s keeps %v; fetched %d bytes from %s in %.2fs", name, p.ts0, r.Bytes, next.tailnet4(), r.Seconds)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// scaleToZero scales the app away and checks that its nodes leave
// Headscale and its links, rules, routes and netns leave the host.
func (ct *cniTest) scaleToZero() {
	t, c := ct.t, ct.c
	s := startStep(t, "scale to 0")
	defer s.done()
	ctx := ct.ctx(3 * time.Minute)
	if _, err := c.Kubectl(ctx, "scale", "-n", ct.ns, "deployment/testapp", "--replicas=0"); err != nil {
		t.Fatal(err)
	}
	if err := waitGone(ctx, c, ct.ns, "-l", "app=testapp", "--timeout=2m"); err != nil {
		t.Fatal(err)
	}
	prefix := clusterName + "-" + ct.ns + "-"
	err := poll(ctx, 500*time.Millisecond, func() error {
		nodes, err := podNodes(ctx, c, prefix)
		if err == nil && len(nodes) > 0 {
			err = fmt.Errorf("headscale still has %v", slices.Collect(maps.Keys(nodes)))
		}
		return err
	})
	if err != nil {
		t.Error(err)
	}
	err = poll(ctx, 500*time.Millisecond, func() error {
		var left []string
		left = append(left, daemonLeftovers(ctx)...)
		for _, n := range netnsNames() {
			if !slices.Contains(ct.netnsBefore, n) {
				left = append(left, "netns "+n)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("left on the host: %s", strings.Join(left, "; "))
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	t.Logf("after scaling to 0: no node %s* in headscale, no tsh*/tst* link, no rule at %d, no route in tables %d-%d, no new netns",
		prefix, cniRulePriority, cniTableBase, cniTableBase+cniTableCount-1)
}

// uninstall runs helm uninstall and checks that the node has its conflist
// back byte for byte, no shim and no pod node in Headscale.
func (ct *cniTest) uninstall() {
	t, c := ct.t, ct.c
	s := startStep(t, "helm uninstall")
	defer s.done()
	ctx := ct.ctx(3 * time.Minute)
	pod, err := ct.daemonPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logs := followLogs(ctx, c, ct.ns, pod)
	out, err := c.Helm(ctx, "uninstall", cniRelease, "-n", ct.ns, "--wait", "--timeout", "2m")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helm uninstall: %s", strings.TrimSpace(out))
	if err := waitGone(ctx, c, ct.ns, pod, "--timeout=90s"); err != nil {
		t.Fatal(err)
	}
	checkHook(t, logs, "removing tailscale-cni")
	now, err := os.ReadFile(cluster.ConflistPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(now, ct.conflist) {
		t.Errorf("conflist after uninstall:\n%q\nbefore install:\n%q", now, ct.conflist)
	} else {
		t.Logf("%s is byte for byte what it was before install (%d bytes)", cluster.ConflistPath(), len(now))
	}
	if exists(cniShim) {
		t.Errorf("%s is still there", cniShim)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(cluster.ConflistPath()), ".*")); len(left) > 0 {
		t.Errorf("the conf dir still holds %v", left)
	}
	nodes, err := headscaleNodes(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	var pods []string
	for _, n := range nodes {
		if slices.Contains(n.Tags, podTag) || strings.HasPrefix(n.Name, clusterName+"-"+ct.ns) {
			pods = append(pods, n.Name)
		}
	}
	if len(pods) > 0 {
		t.Errorf("headscale still has pod nodes %v", pods)
	}
	others := make([]string, 0, len(nodes))
	for _, n := range nodes {
		others = append(others, n.Name)
	}
	t.Logf("after uninstall: shim gone; headscale holds %v, none tagged %s", others, podTag)
}

const afterPod = `apiVersion: v1
kind: Pod
metadata: {name: after-uninstall}
spec:
  terminationGracePeriodSeconds: 5
  containers:
    - name: testapp
      image: ` + testappImage + `
      imagePullPolicy: Never
`

// podAfterUninstall checks that a pod made after the uninstall starts, on
// the cluster network alone.
func (ct *cniTest) podAfterUninstall() {
	t, c := ct.t, ct.c
	s := startStep(t, "pod after uninstall")
	defer s.done()
	ctx := ct.ctx(2 * time.Minute)
	if _, err := c.KubectlIn(ctx, strings.NewReader(afterPod), "apply", "-n", ct.ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(ctx, "wait", "-n", ct.ns, "--for=condition=Ready", "pod/after-uninstall", "--timeout=90s"); err != nil {
		out, _ := c.Kubectl(ctx, "describe", "pod", "-n", ct.ns, "after-uninstall")
		t.Fatalf("the pod made after uninstall did not start: %v\n%s", err, out)
	}
	ipOut, err := c.Kubectl(ctx, "get", "pod", "-n", ct.ns, "after-uninstall", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		t.Fatal(err)
	}
	nets, err := podNets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ip, _ := netip.ParseAddr(strings.TrimSpace(ipOut))
	p, ok := nets[ip]
	if !ok {
		t.Fatalf("no netns holds %s", ip)
	}
	t.Logf("pod after-uninstall: netns %s, eth0 %s, ts0 present: %v", p.netns, p.eth0, p.hasTS)
	if p.hasTS {
		t.Errorf("the pod made after uninstall has ts0 %v", p.ts0)
	}
	if _, err := c.Kubectl(ctx, "delete", "pod", "-n", ct.ns, "after-uninstall", "--wait=true", "--timeout=60s"); err != nil {
		t.Error(err)
	}
}

// cleanup removes whatever the test made, whether it passed or not, so
// that the next test on the node starts clean: the app first (its DELs
// need the daemon), then the release, then the namespace. What the
// release should have put back itself is checked by the steps; here it is
// only put back, and said, before the namespace goes: pods whose DEL
// still reaches the shim of a daemon that is gone would never go.
func (ct *cniTest) cleanup() {
	t, c := ct.t, ct.c
	s := startStep(t, "cleanup")
	defer s.done()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.Kubectl(ctx, "delete", "deployment,pod", "--all", "-n", ct.ns, "--ignore-not-found", "--wait=true", "--timeout=60s"); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if _, err := c.Helm(ctx, "uninstall", cniRelease, "-n", ct.ns, "--ignore-not-found", "--wait", "--timeout", "2m"); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if err := waitGone(ctx, c, ct.ns, "-l", "app.kubernetes.io/instance="+cniRelease, "--timeout=60s"); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if fixed := ct.restoreHost(); len(fixed) > 0 {
		t.Logf("cleanup put back or removed what the release left: %v", fixed)
	}
	if _, err := c.Kubectl(ctx, "delete", "namespace", ct.ns, "--ignore-not-found", "--wait=true", "--timeout=2m"); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if left := sweepDaemonLeftovers(ctx); len(left) > 0 {
		t.Errorf("cleanup: the daemon left %v; removed them", left)
	}
}
