package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// envNetmapCache is "off" to take the cache-network-maps node attribute out
// of the benchmark Headscale's policy, to measure a restart without the
// pods' netmap caches (see the CNI README's recovery section).
const envNetmapCache = "TSYMBIOTE_BENCH_NETMAP_CACHE"

// nodeAttrsRE matches the policy's nodeAttrs entry, as headscaletest
// writes it (its closing bracket on a line of its own), to remove it.
var nodeAttrsRE = regexp.MustCompile(`(?ms)^\s*"nodeAttrs":\s*\[.*?^\s*\],\n`)

// BenchmarkCNIRestart is BenchmarkCNI's fill and restart phases alone: it
// fills the node (TSYMBIOTE_BENCH_PODS pods), SIGKILLs the daemon and
// times until every pod answers a peer again. It prints the restart line
// BenchmarkCNI prints, plus where recovery spent its time.
func BenchmarkCNIRestart(b *testing.B) {
	nb := newNodeBench(b)
	cache := "on"
	if os.Getenv(envNetmapCache) == "off" {
		cache = "off"
		nb.stripNodeAttrs()
	}
	anchor, _ := nb.addOne("anchor")
	firstReply(b, anchor, anchor.tailnetIPv4(b).String())
	nb.pods = []*pod{anchor}
	nb.fill()
	// Let every pod's netmap settle (and be cached) before the kill, as
	// on a node that has run a while.
	time.Sleep(5 * time.Second)
	nb.restart()
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	b.ReportMetric(nb.restartAll.Seconds(), "restart-all-reachable-s")
	b.ReportMetric(nb.restartP50.Seconds(), "restart-p50-s")
	b.Logf("SIGKILLed daemon restarted (netmap cache %s): said it recovered %d pods after %v; %d of %d pods answered a peer's ping again, the last after %v (p50 pod %v)",
		cache, len(nb.pods), ms(nb.recovered), len(nb.pods)-len(nb.unrecovered), len(nb.pods), ms(nb.restartAll), ms(nb.restartP50))
	for _, l := range strings.Split(nb.e.daemonLog.String(), "\n") {
		if strings.Contains(l, "recover: ") && (strings.Contains(l, "pods back in") || strings.Contains(l, "sweep done")) {
			b.Logf("daemon: %s", l)
		}
	}
	b.Logf("load average at the end: %s", loadAvg())
	nb.deleteAll()
}

// stripNodeAttrs removes the nodeAttrs entry from the benchmark Headscale's
// policy.
func (nb *nodeBench) stripNodeAttrs() {
	b := nb.b
	pe, err := controlplane.AsPolicyEditor(nb.e.cp)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(nb.ctx, 30*time.Second)
	defer cancel()
	cur, err := pe.GetPolicy(ctx)
	if err != nil {
		b.Fatal(err)
	}
	body := nodeAttrsRE.ReplaceAllString(cur.Body, "")
	if body == cur.Body {
		b.Logf("policy has no nodeAttrs to remove")
		return
	}
	if _, err := pe.SetPolicy(ctx, body, cur.Version); err != nil {
		b.Fatal(fmt.Errorf("removing nodeAttrs from the policy: %w", err))
	}
}

func TestNodeAttrsRE(t *testing.T) {
	for name, policy := range map[string]string{"OpenPolicy": headscaletest.OpenPolicy, "SeedPolicy": headscaletest.SeedPolicy} {
		got := nodeAttrsRE.ReplaceAllString(policy, "")
		if got == policy || strings.Contains(got, "nodeAttrs") || strings.Contains(got, "cache-network-maps") {
			t.Errorf("%s: nodeAttrs not removed:\n%s", name, got)
		}
		if !strings.Contains(got, `"grants"`) || !strings.Contains(got, `"tagOwners"`) {
			t.Errorf("%s: removed more than nodeAttrs:\n%s", name, got)
		}
	}
}
