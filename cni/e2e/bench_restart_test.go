package e2e

import (
	"strings"
	"testing"
	"time"
)

// envNetmapCache is "on" to start the benchmark Headscale with
// headscaletest.NetmapCachePolicy, which grants pod nodes the
// cache-network-maps node attribute, to measure the node with the pods'
// netmap caches (see the CNI README's recovery section); "off" (the
// default) without.
const envNetmapCache = "TSYMBIOTE_BENCH_NETMAP_CACHE"

// BenchmarkCNIRestart is BenchmarkCNI's fill and restart phases alone: it
// fills the node (TSYMBIOTE_BENCH_PODS pods), SIGKILLs the daemon and
// times until every pod answers a peer again. It prints the restart line
// BenchmarkCNI prints, plus where recovery spent its time.
func BenchmarkCNIRestart(b *testing.B) {
	nb := newNodeBench(b)
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
		onOff(nb.netmapCache), len(nb.pods), ms(nb.recovered), len(nb.pods)-len(nb.unrecovered), len(nb.pods), ms(nb.restartAll), ms(nb.restartP50))
	for _, l := range strings.Split(nb.e.daemonLog.String(), "\n") {
		if strings.Contains(l, "recover: ") && (strings.Contains(l, "pods back in") || strings.Contains(l, "sweep done")) {
			b.Logf("daemon: %s", l)
		}
	}
	b.Logf("load average at the end: %s", loadAvg())
	nb.deleteAll()
}

// onOff is "on" for true and "off" for false, for the benchmarks' lines.
func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
