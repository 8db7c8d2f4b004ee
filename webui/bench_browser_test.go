package webui

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// browserFigures is what frontend/e2e/bench.mjs prints.
type browserFigures struct {
	ClickToLastMS float64 `json:"clickToLastMs"`
	Frames        int     `json:"frames"`
	MaxGapMS      float64 `json:"maxGapMs"`
	P50GapMS      float64 `json:"p50GapMs"`
	P95GapMS      float64 `json:"p95GapMs"`
	GapsOver100   int     `json:"gapsOver100"`
	LongTasks     int     `json:"longTasks"`
	LongestTaskMS float64 `json:"longestTaskMs"`
	LongTaskMS    float64 `json:"longTaskMs"`
	Results       int     `json:"results"`
	Drawn         int     `json:"drawn"`
	Edges         int     `json:"edges"`
	Throttle      float64 `json:"throttle"`
	Progress      string  `json:"progress"` // the page's progress line at the end, with the server's time
	WorstGaps     []struct {
		At int `json:"at"` // ms after the click the gap ended
		MS int `json:"ms"`
	} `json:"worstGaps"`
}

// pairRTT is a fake tailnet's round trip from one host to peer: spread
// log-uniformly over 5-500 ms (most pairs near, a long tail far; median
// 50 ms, mean 107 ms), the same for a pair in every run, and one pair in
// fifty fails (the peer does not answer, reported after its round trip).
func pairRTT(host string) func(peer string) (time.Duration, bool) {
	return func(peer string) (time.Duration, bool) {
		h := fnv.New64a()
		h.Write([]byte(host + ">" + peer))
		x := h.Sum64()
		u := float64(x>>11) / (1 << 53)
		d := time.Duration(5 * math.Pow(100, u) * float64(time.Millisecond))
		return d, x%50 == 0
	}
}

// BenchmarkPingAllBrowser measures "Ping all" over 250 hosts as a user
// sees it: Chromium (Debian's, driven by playwright-core through
// frontend/e2e/bench.mjs) clicks the button on the embedded frontend, and
// the fan-out runs through the real API (fanout.go, the event stream) to
// 250 fake adapters over gRPC on loopback, every host seeing every other
// (62,250 pings, round trips spread 5-500 ms, 2% failing). It prints the
// time from the click to the frame showing the last result, and the gaps
// between animation frames meanwhile (longest, p50, p95) with the page's
// long tasks, with Chromium's CPU throttling off and at 4x.
//
// It needs what the browser tests need (needBrowser): the frontend built
// before the test binary, Chromium and playwright-core.
func BenchmarkPingAllBrowser(b *testing.B) {
	const n = 250
	chromium := needBrowser(b)
	addrs, _ := fakeMesh(b, n, func(i int, f *fakeAdapter) { f.rtt = pairRTT(f.self.Id) })
	s, hs := newTestServer(b, addrs, nil)
	s.logf = func(string, ...any) {}
	// The API alone first, read as the page reads it: what the browser
	// cannot beat.
	b.Run(fmt.Sprintf("hosts=%d/api-only", n), func(b *testing.B) {
		var el time.Duration
		var done *FanoutState
		for range b.N {
			t0 := time.Now()
			st := startFanoutHTTP(b, hs.URL, FanoutRequest{Kind: "ping"})
			_, done = readEvents(b, hs.URL+"/api/fanouts/"+st.ID+"/events?batch=1", nil)
			el = time.Since(t0)
			b.Logf("ping all over %d hosts through the API alone: %d calls in %v (the server's last call ended after %.0f ms), %d failed", n, done.Total, el.Round(time.Millisecond), done.ElapsedMS, done.Failed)
		}
		b.ReportMetric(float64(el.Milliseconds()), "ms/pingall")
	})
	for _, throttle := range []int{1, 4} {
		b.Run(fmt.Sprintf("hosts=%d/cpu-throttle=%dx", n, throttle), func(b *testing.B) {
			var f browserFigures
			for range b.N {
				f = runBrowserBench(b, chromium, hs.URL, n, throttle)
				b.Logf("ping all over %d hosts (%d calls, %d edges in the graph), Chromium CPU throttling %s: click to last result on screen %.0f ms; frame gaps: longest %.0f ms, p50 %.1f ms, p95 %.1f ms, %d over 100 ms of %d frames; long tasks %d (longest %.0f ms, %.0f ms in all); results drawn %d",
					n, f.Results, f.Edges, throttleName(throttle), f.ClickToLastMS, f.MaxGapMS, f.P50GapMS, f.P95GapMS, f.GapsOver100, f.Frames, f.LongTasks, f.LongestTaskMS, f.LongTaskMS, f.Drawn)
				b.Logf("longest frame gaps (ms, ending ms after the click): %v", f.WorstGaps)
				b.Logf("the page's progress line at the last result: %q", f.Progress)
			}
			b.ReportMetric(f.ClickToLastMS, "click-to-last-ms")
			b.ReportMetric(f.MaxGapMS, "max-frame-gap-ms")
			b.ReportMetric(f.P50GapMS, "p50-frame-gap-ms")
			b.ReportMetric(f.P95GapMS, "p95-frame-gap-ms")
			b.ReportMetric(float64(f.Drawn), "results-drawn")
		})
	}
}

func throttleName(x int) string {
	if x == 1 {
		return "off"
	}
	return fmt.Sprintf("%dx", x)
}

// runBrowserBench runs e2e/bench.mjs once against url and returns its figures.
func runBrowserBench(b *testing.B, chromium, url string, nodes, throttle int) browserFigures {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "e2e/bench.mjs")
	cmd.Dir = "frontend"
	cmd.Env = append(os.Environ(), "WEBUI_URL="+url, "CHROMIUM="+chromium, fmt.Sprintf("NODES=%d", nodes), fmt.Sprintf("THROTTLE=%d", throttle))
	out, err := cmd.CombinedOutput()
	var f browserFigures
	found := false
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if j, ok := strings.CutPrefix(line, "bench: {"); ok {
			if err := json.Unmarshal([]byte("{"+j), &f); err != nil {
				b.Fatalf("bench.mjs printed %q: %v", line, err)
			}
			found = true
			if os.Getenv("BENCH_RAW") != "" {
				b.Log(line)
			}
			continue
		}
		b.Log(line)
	}
	if err != nil || !found {
		b.Fatalf("bench.mjs: %v", err)
	}
	return f
}
