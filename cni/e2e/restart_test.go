package e2e

import (
	"context"
	"io/fs"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// ts0Addrs reads ts0's addresses inside p's netns.
func ts0Addrs(t testing.TB, p *pod) []string {
	t.Helper()
	var out []string
	err := ns.WithNetNSPath(p.path(), func(ns.NetNS) error {
		l, err := netlink.LinkByName("ts0")
		if err != nil {
			return err
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		for _, a := range as {
			if !a.IP.IsLinkLocalUnicast() {
				out = append(out, a.IPNet.String())
			}
		}
		return err
	})
	if err != nil {
		t.Fatalf("reading ts0 in %s: %v", p.name, err)
	}
	return out
}

func TestKill9Recovery(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	before := e.counts(t)
	pods := []*pod{e.newPod("pod-a"), e.newPod("pod-b"), e.newPod("pod-c")}
	addrs := map[string][]string{}
	for _, p := range pods {
		if _, err := e.add(ctx, p); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
		addrs[p.name] = ts0Addrs(t, p)
	}
	ping(t, pods[0], pods[1].tailnetIPv4(t), 30*time.Second)
	devsBefore := devicesByID(t, e.cp)

	e.stopDaemon(true) // kill -9
	t.Logf("daemon killed with 3 pods up")
	start := time.Now()
	e.startDaemon()
	log := e.daemonLog.String()
	if !strings.Contains(log, "recovered 3 pods") {
		t.Fatalf("daemon did not report recovering 3 pods:\n%s", log)
	}
	t.Logf("daemon restarted and recovered 3 pods in %v", time.Since(start).Round(time.Millisecond))

	for _, p := range pods {
		if got := ts0Addrs(t, p); strings.Join(got, ",") != strings.Join(addrs[p.name], ",") {
			t.Errorf("pod %s: ts0 has %v after restart, had %v", p.name, got, addrs[p.name])
		}
		if err := e.check(ctx, p); err != nil {
			t.Errorf("CHECK %s after restart: %v", p.name, err)
		}
	}
	devsAfter := devicesByID(t, e.cp)
	if len(devsAfter) != len(devsBefore) {
		t.Errorf("Headscale has %d nodes after restart, had %d", len(devsAfter), len(devsBefore))
	}
	for id := range devsAfter {
		if _, ok := devsBefore[id]; !ok {
			t.Errorf("new node %s appeared after restart", id)
		}
	}
	d := ping(t, pods[0], pods[1].tailnetIPv4(t), 30*time.Second)
	t.Logf("pod-a reaches pod-b %v after the restart finished", d.Round(time.Millisecond))
	ln := listenIn(t, pods[2], ":5201")
	sums := sinkSums(ln)
	c, err := dialFrom(pods[1], net.JoinHostPort(pods[2].tailnetIPv4(t).String(), "5201"))
	if err != nil {
		t.Fatalf("pod-b dialing pod-c after restart: %v", err)
	}
	send10MB(t, c, sums)

	for _, p := range pods {
		if err := e.del(ctx, p); err != nil {
			t.Fatalf("DEL %s: %v", p.name, err)
		}
	}
	if after := e.counts(t); after != before {
		t.Errorf("host objects after DEL differ: before %v, after %v", before, after)
	}
}

// TestRestartSweepsGonePods kills the daemon, removes a pod's netns behind
// its back, and expects the restarted daemon to remove that pod's node,
// links, rules, tables and state, keeping the other.
func TestRestartSweepsGonePods(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before := e.counts(t)
	keep, gone := e.newPod("keep"), e.newPod("gone")
	for _, p := range []*pod{keep, gone} {
		if _, err := e.add(ctx, p); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
	}
	nodesBefore := len(devicesByID(t, e.cp))
	e.stopDaemon(true)
	// The bridge plugin's DEL would need the netns; the runtime that lost
	// the pod never calls it. Remove the netns as a crash would.
	if out, err := exec.Command("ip", "netns", "del", gone.netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	e.startDaemon()
	if !strings.Contains(e.daemonLog.String(), "recovered 1 pods") {
		t.Fatalf("want 1 pod recovered:\n%s", e.daemonLog.String())
	}
	if n := len(devicesByID(t, e.cp)); n != nodesBefore-1 {
		t.Errorf("Headscale has %d nodes, want %d (gone pod's node deleted)", n, nodesBefore-1)
	}
	if err := e.check(ctx, keep); err != nil {
		t.Errorf("CHECK keep: %v", err)
	}
	if err := e.del(ctx, keep); err != nil {
		t.Fatal(err)
	}
	// gone's bridge veth went with its netns; DEL of the vanished pod still
	// succeeds (runtimes retry it).
	if err := e.cni.DelNetworkList(ctx, e.conf, e.rt(gone)); err != nil {
		t.Errorf("DEL of the vanished pod: %v", err)
	}
	if after := e.counts(t); after != before {
		t.Errorf("host objects differ: before %v, after %v", before, after)
	}
}

func TestDelIdempotentAndChurn(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	before := e.counts(t)
	nodesBefore := len(devicesByID(t, e.cp))

	// DEL twice.
	p := e.newPod("twice")
	if _, err := e.add(ctx, p); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := e.del(ctx, p); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	// DEL of a container nobody ADDed, with and without a netns.
	u := e.newPod("unknown")
	if err := e.del(ctx, u); err != nil {
		t.Fatalf("DEL unknown: %v", err)
	}
	rt := e.rt(u)
	rt.NetNS = ""
	if err := e.cni.DelNetworkList(ctx, e.conf, rt); err != nil {
		t.Fatalf("DEL unknown without netns: %v", err)
	}

	// 10 concurrent ADDs.
	var pods []*pod
	for i := range 10 {
		pods = append(pods, e.newPod("conc-"+string(rune('a'+i))))
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(pods))
	for i, p := range pods {
		wg.Go(func() { _, errs[i] = e.add(ctx, p) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent ADD %s: %v", pods[i].name, err)
		}
	}
	t.Logf("10 concurrent ADDs done in %v", time.Since(start).Round(time.Millisecond))
	seen := map[string]bool{}
	for _, p := range pods {
		ip := p.tailnetIPv4(t).String()
		if seen[ip] {
			t.Fatalf("two pods got %s", ip)
		}
		seen[ip] = true
	}
	ping(t, pods[0], pods[9].tailnetIPv4(t), 30*time.Second)
	for _, p := range pods {
		wg.Go(func() {
			if err := e.del(ctx, p); err != nil {
				t.Errorf("DEL %s: %v", p.name, err)
			}
		})
	}
	wg.Wait()

	// 50 ADD/DEL cycles, five at a time, each with a new container.
	start = time.Now()
	cyc := []*pod{e.newPod("cyc-0"), e.newPod("cyc-1"), e.newPod("cyc-2"), e.newPod("cyc-3"), e.newPod("cyc-4")}
	for round := range 10 {
		for _, p := range cyc {
			wg.Go(func() {
				p.id = "e2e" + e.id + randHex(8)
				e.mu.Lock()
				e.containers = append(e.containers, p.id)
				e.mu.Unlock()
				if _, err := e.add(ctx, p); err != nil {
					t.Errorf("cycle %d ADD %s: %v", round, p.name, err)
					return
				}
				if err := e.del(ctx, p); err != nil {
					t.Errorf("cycle %d DEL %s: %v", round, p.name, err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("50 ADD/DEL cycles done in %v", time.Since(start).Round(time.Millisecond))

	if n := len(devicesByID(t, e.cp)); n != nodesBefore {
		t.Errorf("Headscale has %d nodes after all DELs, had %d", n, nodesBefore)
	}
	if after := e.counts(t); after != before {
		t.Errorf("host objects differ: before %v, after %v", before, after)
	}
}

// netmapCaches lists the netmap-cache dirs under the test's state dir:
// one per pod node that the control plane let cache its netmap.
func netmapCaches(t testing.TB, e *env) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "netmap-cache" {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// TestRestartHonoursPolicyChange kills the daemon while pods' nodes hold
// their netmaps on disk (the policy grants tag:k8s-pod cache-network-maps),
// changes the policy while it is down so that a may no longer reach b,
// and expects the restarted pods, which come back on their cached netmaps
// with the old policy, to take the new one from the control plane: a's
// connections to b refused, b's to a still open. DEL removes the caches
// with the pods' state.
func TestRestartHonoursPolicyChange(t *testing.T) {
	e := newEnvWith(t, envOptions{policy: headscaletest.NetmapCachePolicy})
	ensureTool(t, "iperf3", "iperf3")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, b := e.newPod("pola"), e.newPod("polb")
	for _, p := range []*pod{a, b} {
		if _, err := e.add(ctx, p); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
	}
	aIP, bIP := a.tailnetIPv4(t).String(), b.tailnetIPv4(t).String()
	const port = 5302
	listenTCP(t, a, aIP, port)
	listenTCP(t, b, bIP, port)
	waitFor := func(what string, ok func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for deadline := start.Add(60 * time.Second); !ok(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60s", what)
			}
		}
		return time.Since(start)
	}
	waitFor("a connects to b under the open policy", func() bool { return tcpConnects(a, bIP, port) })
	waitFor("both pods' netmaps cached", func() bool { return len(netmapCaches(t, e)) >= 2 })

	e.stopDaemon(true)
	e.allowOnly(ctx, bIP, aIP)
	start := time.Now()
	e.startDaemon()
	t.Logf("daemon restarted after the policy change; recovered in %v", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(e.daemonLog.String(), "loaded netmap from disk cache") {
		t.Errorf("no pod node started from its cached netmap; daemon log:\n%s", e.daemonLog.String())
	}
	d := waitFor("a can no longer connect to b", func() bool { return !tcpConnects(a, bIP, port) })
	t.Logf("a's connections to b refused %v after the daemon was ready (each try waits up to 3 s)", d.Round(time.Millisecond))
	if !tcpConnects(b, aIP, port) {
		t.Error("b cannot connect to a, which the policy allows")
	}
	for _, p := range []*pod{a, b} {
		if err := e.del(ctx, p); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
	if left := netmapCaches(t, e); len(left) > 0 {
		t.Errorf("netmap caches left after DEL: %v", left)
	}
}
