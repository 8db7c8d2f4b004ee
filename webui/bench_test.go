package webui

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPingAll measures what a user waits for after pressing "Ping
// all": from the POST that starts the fan-out to the "done" event on its
// stream, over HTTP like the browser. The tailnet is N real tailscaled on a
// real Headscale with one adapter process serving all N as targets, so a
// fan-out is N*(N+1) disco pings (every peer: the other daemons, the
// adapter and the WebUI). Each size is set up once (in the parent, since
// the framework runs a sub-benchmark body more than once) and measured at
// the default concurrency (4096 calls in flight, 16 per host) and at 256.
// Run with -benchtime=3x; it needs about 2 GB of RAM at 50 nodes.
func BenchmarkPingAll(b *testing.B) {
	for _, n := range []int{20, 50} {
		d := startDemo(b, n, false, func(c *Config) { c.RefreshInterval = time.Minute; c.quiet = true })
		start := time.Now()
		g := d.waitGraph(b)
		b.Logf("nodes=%d: graph complete %v after the WebUI started: %d nodes, %d edges", n, time.Since(start).Round(time.Millisecond), len(g.Nodes), len(g.Edges))
		pingAll := func(b *testing.B, conc int) (time.Duration, *FanoutState) {
			t0 := time.Now()
			st := startFanoutHTTP(b, d.url, FanoutRequest{Kind: "ping", Concurrency: conc})
			_, done := readEvents(b, d.url+"/api/fanouts/"+st.ID+"/events", nil)
			return time.Since(t0), done
		}
		cold, done := pingAll(b, 0)
		b.Logf("nodes=%d: cold ping all: %d calls in %v, %d failed", n, done.Total, cold.Round(time.Millisecond), done.Failed)
		for _, conc := range []int{defaultConc, 256} {
			b.Run(fmt.Sprintf("nodes=%d/concurrency=%d", n, conc), func(b *testing.B) {
				var total time.Duration
				var failed, calls int
				for range b.N {
					el, done := pingAll(b, conc)
					total += el
					failed += done.Failed
					calls = done.Total
					b.Logf("ping all: %d calls in %v, %d failed", done.Total, el.Round(time.Millisecond), done.Failed)
				}
				b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/pingall")
				b.ReportMetric(float64(calls), "calls")
				b.ReportMetric(float64(failed)/float64(b.N), "failed/op")
				b.ReportMetric(float64(cold.Milliseconds()), "cold-ms")
			})
		}
	}
}
