package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/testkit"
)

// TestPodCommand runs `tsymbiote pod` and `tsymbiote node` against two
// tailscale-cni pods on the node, both on the node's own sockets and
// through the API server (the daemon's relay over pods/exec), the same as
// a kubectl plugin, and an adapter's netcheck for a pod's socket.
func TestPodCommand(t *testing.T) {
	c := node(t)
	ct := &cniTest{t: t, c: c, ns: "podcmd-" + randHex(3)}
	ct.snapshotHost()
	t.Cleanup(ct.cleanup)
	ct.install(nil)
	ct.deployApp(2)
	names := ct.podNames()
	a, b := names[0], names[1]
	aRef, bRef := ct.ns+"/"+a, ct.ns+"/"+b
	bIP := ct.pods[b].tailnet4().String()

	tsym := testkit.BuildOnce(t, "tsymbiote.dhouti.dev/tsymbiote/cmd/tsymbiote")
	run := func(args ...string) string {
		t.Helper()
		ctx := ct.ctx(2 * time.Minute)
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, tsym, append(args, "--kubeconfig", c.Kubeconfig)...)
		out, err := cmd.CombinedOutput()
		t.Logf("$ tsymbiote %s  (%.2fs)\n%s", strings.Join(args, " "), time.Since(t0).Seconds(), out)
		if err != nil {
			t.Fatalf("tsymbiote %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	want := func(out string, subs ...string) {
		t.Helper()
		for _, s := range subs {
			if !strings.Contains(out, s) {
				t.Errorf("output lacks %q", s)
			}
		}
	}

	// status: b is a's peer, whichever way the socket is reached.
	for _, via := range []string{"auto", "local", "exec"} {
		out := run("pod", "status", aRef, "--via", via)
		want(out, "# pod "+aRef+" on node "+c.NodeName, bIP, ct.nodeName(b), ct.nodeName(a))
		if via == "exec" {
			want(out, "via the daemon "+ct.ns+"/")
		}
	}

	// ping: latency and path, to b by its pod name and by its address,
	// on the node's socket and through the API server.
	for _, via := range []string{"local", "exec"} {
		out := run("pod", "ping", aRef, bRef, "--via", via, "-c", "3", "--until-direct=false")
		want(out, "pong from "+ct.nodeName(b)+" ("+bIP+") via ")
	}
	out := run("pod", "ping", aRef, bIP, "--type", "tsmp", "-c", "1")
	want(out, "pong from "+ct.nodeName(b)+" ("+bIP+") via TSMP in ")

	// netcheck: the pod's node's own report, named for the pod.
	out = run("pod", "netcheck", aRef, "--via", "exec")
	want(out, "Report (pod "+aRef+", node "+ct.nodeName(a), "the node's own last netcheck", "* UDP: true", "* Nearest DERP: ")

	// whois: b's address, as a's node sees it.
	out = run("pod", "whois", aRef, bIP)
	want(out, "Machine:", ct.nodeName(b), podTag)

	// A pod tailscale-cni never attached: the relay says so.
	ctx := ct.ctx(time.Minute)
	cmd := exec.CommandContext(ctx, tsym, "pod", "status", ct.ns+"/no-such-pod", "--kubeconfig", c.Kubeconfig)
	bad, err := cmd.CombinedOutput()
	t.Logf("$ tsymbiote pod status %s/no-such-pod\n%s", ct.ns, bad)
	if err == nil || !strings.Contains(string(bad), "not found") {
		t.Errorf("status of a missing pod: %v", err)
	}

	ct.kubectlPlugin(aRef, bIP)
	ct.adapterNetcheck(a)

	// When things break: read the daemon's log, then restart it.
	out = run("node", "logs", c.NodeName, "--tail", "5")
	if strings.TrimSpace(out) == "" {
		t.Error("node logs printed nothing")
	}
	logs, err := c.Kubectl(ctx, "-n", ct.ns, "logs", "-l", "app.kubernetes.io/name=tailscale-cni", "-c", "daemon", "--tail=3")
	t.Logf("$ kubectl -n %s logs -l app.kubernetes.io/name=tailscale-cni -c daemon --tail=3\n%s", ct.ns, logs)
	if err != nil || strings.TrimSpace(logs) == "" {
		t.Errorf("documented kubectl logs line: %v", err)
	}
	out = run("node", "restart", c.NodeName, "--timeout", "3m")
	want(out, "deleted "+ct.ns+"/", " is Ready after ")
	// The pods keep their nodes across the restart.
	if err := poll(ct.ctx(2*time.Minute), time.Second, func() error {
		o, err := exec.CommandContext(ctx, tsym, "pod", "status", aRef, "--kubeconfig", c.Kubeconfig).CombinedOutput()
		if err != nil || !strings.Contains(string(o), bIP) {
			return fmt.Errorf("status (no %s yet): %w\n%s", bIP, err, o)
		}
		t.Logf("after the restart:\n%s", o)
		return nil
	}); err != nil {
		t.Errorf("status after the restart: %v", err)
	}
	// The documented kubectl line for a restart of one node's daemon.
	del, err := c.Kubectl(ctx, "-n", ct.ns, "delete", "pod", "-l", "app.kubernetes.io/name=tailscale-cni",
		"--field-selector", "spec.nodeName="+c.NodeName)
	t.Logf("$ kubectl -n %s delete pod -l app.kubernetes.io/name=tailscale-cni --field-selector spec.nodeName=%s\n%s", ct.ns, c.NodeName, del)
	if err != nil || !strings.Contains(del, "deleted") {
		t.Errorf("documented kubectl restart line: %v", err)
	}
	if _, err := c.Kubectl(ctx, "rollout", "status", "-n", ct.ns, "daemonset/"+cniRelease, "--timeout=2m"); err != nil {
		t.Errorf("the daemon did not come back: %v", err)
	}
}

// kubectlPlugin runs `kubectl tsymbiote pod status` with the plugin on PATH.
func (ct *cniTest) kubectlPlugin(aRef, bIP string) {
	t := ct.t
	plugin := testkit.BuildOnce(t, "tsymbiote.dhouti.dev/tsymbiote/cmd/kubectl-tsymbiote")
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ct.ctx(2*time.Minute), filepath.Join(root, "bin", "kubectl"), "tsymbiote", "pod", "status", aRef)
	// kubectl takes no flag before a plugin's name: the kubeconfig comes
	// from the environment, as a user's would.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(plugin)+":"+os.Getenv("PATH"), "KUBECONFIG="+ct.c.Kubeconfig)
	out, err := cmd.CombinedOutput()
	t.Logf("$ kubectl tsymbiote pod status %s\n%s", aRef, out)
	if err != nil || !strings.Contains(string(out), bIP) {
		t.Errorf("kubectl tsymbiote pod status: %v", err)
	}
}

// adapterNetcheck runs an adapter (--dev, on loopback) over the daemon's
// pods directory, as the chart's adapter does, and asks it for pod's
// netcheck: the pod's node's own, named for the pod.
func (ct *cniTest) adapterNetcheck(pod string) {
	t := ct.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	bin := testkit.BuildOnce(t, "tsymbiote.dhouti.dev/adapter/cmd/tsymbiote-adapter")
	p := testkit.Start(t, exec.Command(bin, "--dev", "--port", port, "--socket", filepath.Join(runDir, "pods")))
	defer func() { _ = p.Stop(testkit.StopGrace) }()
	conn, err := grpc.NewClient("passthrough:///127.0.0.1:"+port, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := adapterv1.NewAdapterServiceClient(conn)
	var r *adapterv1.NetcheckResponse
	if err := poll(ct.ctx(time.Minute), 500*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err = cl.Netcheck(ctx, &adapterv1.NetcheckRequest{Target: ct.ns + "_" + pod})
		return err
	}); err != nil {
		t.Fatalf("adapter netcheck for %s_%s: %v\n%s", ct.ns, pod, err, p.Output())
	}
	t.Logf("adapter netcheck for %s/%s: source=%v pod=%s/%s self=%s %v udp=%v preferred=%d/%s regions=%v endpoints=%v",
		ct.ns, pod, r.Source, r.PodNamespace, r.PodName, r.Self.GetHostname(), r.Self.GetTailscaleIps(), r.Udp,
		r.PreferredDerpId, r.PreferredDerpCode, r.Regions, r.Self.GetEndpoints())
	if r.Source != adapterv1.NetcheckSource_NETCHECK_SOURCE_TARGET || r.PodNamespace != ct.ns || r.PodName != pod ||
		r.Self.GetHostname() != ct.nodeName(pod) || r.PreferredDerpId == 0 || len(r.Regions) == 0 {
		t.Errorf("adapter netcheck for a pod = %v", r)
	}
}
