package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// The benchmark's knobs, from the environment (the Makefile's bench-cni
// passes its variables through).
const (
	// envBatching is "default" (or empty) for a Headscale with its own
	// batching of node-store writes (500 ms) and peer updates (800 ms),
	// what users run, or "short" for the 10 ms/50 ms that tests use.
	envBatching = "TSYMBIOTE_BENCH_BATCHING"
	// envPods is how many pods the node gets (default 110, kubelet's
	// default maximum per node; at least 3).
	envPods = "TSYMBIOTE_BENCH_PODS"
	// envProfiles names a directory to save the daemon's heap profile at
	// full node and CPU profile while idle in.
	envProfiles = "TSYMBIOTE_BENCH_PROFILES"
	// envPool is the daemon's node pool size (TS_CNI_POOL_SIZE, default
	// benchPool); 0 turns the pool off.
	envPool = "TSYMBIOTE_BENCH_POOL"
)

// benchPool is the node pool the benchmark gives the daemon unless told
// otherwise: enough for pods that start one at a time.
const benchPool = 2

// latencyPods is how many pods ADD latency is measured over, one at a time.
const latencyPods = 20

// fillConcurrency is how many ADDs run at once while filling the node, as
// kubelet starting a deployment's pods does.
const fillConcurrency = 4

// nodeBench is BenchmarkCNI's state, phase after phase.
type nodeBench struct {
	b        *testing.B
	e        *env
	ctx      context.Context
	n        int    // pods on the node at full
	batching string // "default" or "short"
	// netmapCache: the policy grants pod nodes cache-network-maps
	// (envNetmapCache=on).
	netmapCache bool
	profiles    string // directory for profiles, or ""
	debug       string // the daemon's debug (pprof) address
	pool        int    // the daemon's pool size, from its metrics

	rss0  rss
	rssAt map[int]rss
	pods  []*pod

	addLat, readyLat []time.Duration // one at a time
	poolWait         time.Duration   // waiting for the pool to refill between them
	takesLatency     [2]float64      // pool hits and misses after the one-at-a-time ADDs
	takesFill        [2]float64      // and after filling
	fillLat          []time.Duration // ADDs while filling, fillConcurrency at once
	fillTook         time.Duration
	reachAllTook     time.Duration // at full, every pod from a peer
	unreached        []string      // pods that never answered at full
	unrecovered      []string      // pods that never answered after the restart
	goroutines       float64       // at full
	heapPerPod       float64       // live heap per pod at full, MiB

	idleCPU      float64 // % of one core
	idleLogLines int     // per minute, whole daemon

	recovered     time.Duration // kill to "recovered N pods"
	restartAll    time.Duration // kill to every pod reachable from a peer
	restartP50    time.Duration
	throughputRes throughputResult
}

func newNodeBench(b *testing.B) *nodeBench {
	nb := &nodeBench{b: b, n: 110, batching: "default", profiles: os.Getenv(envProfiles), rssAt: map[int]rss{}}
	switch v := os.Getenv(envBatching); v {
	case "", "default":
	case "short":
		nb.batching = "short"
	default:
		b.Fatalf("%s=%q: want default or short", envBatching, v)
	}
	if v := os.Getenv(envPods); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 3 {
			b.Fatalf("%s=%q: want a number of pods, at least 3", envPods, v)
		}
		nb.n = n
	}
	if nb.profiles != "" {
		if err := os.MkdirAll(nb.profiles, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	ensureTool(b, "iperf3", "iperf3")
	nb.debug = testkit.FreeAddr(b)
	pool := strconv.Itoa(benchPool)
	if v := os.Getenv(envPool); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			b.Fatalf("%s=%q: want a pool size, 0 or more", envPool, v)
		}
		pool = v
	}
	daemonEnv := []string{"TS_CNI_DEBUG_ADDR=" + nb.debug, "TS_CNI_POOL_SIZE=" + pool}
	opts := envOptions{defaultBatching: nb.batching == "default"}
	switch v := os.Getenv(envNetmapCache); v {
	case "", "off":
	case "on":
		nb.netmapCache = true
		opts.policy = headscaletest.NetmapCachePolicy
	default:
		b.Fatalf("%s=%q: want on or off", envNetmapCache, v)
	}
	nb.e = newEnvWith(b, opts, daemonEnv...)
	if v, ok := tryMetric(b, nb.e.metrics, "tailscale_cni_pool_size"); ok {
		nb.pool = int(v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	b.Cleanup(cancel)
	nb.ctx = ctx
	b.Logf("node-scale benchmark: %d pods, Headscale batching %s, node pool %d, netmap cache %s; load average %s", nb.n, nb.batching, nb.pool, onOff(nb.netmapCache), loadAvg())
	nb.rss0 = settledRSS(b, nb.e.daemon.PID())
	return nb
}

func loadAvg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// rssPoint records the daemon's settled RSS when the node holds one of the
// pod counts the benchmark reports.
func (nb *nodeBench) rssPoint() {
	n := len(nb.pods)
	if n == 1 || n == 10 || n == 30 || n == nb.n {
		if _, ok := nb.rssAt[n]; !ok {
			nb.rssAt[n] = settledRSS(nb.b, nb.e.daemon.PID())
		}
	}
}

// addOne ADDs a new pod and returns how long ADD took.
func (nb *nodeBench) addOne(name string) (*pod, time.Duration) {
	p := nb.e.newPod(name)
	start := time.Now()
	if _, err := nb.e.add(nb.ctx, p); err != nil {
		nb.b.Fatalf("ADD %s: %v", p.name, err)
	}
	return p, time.Since(start)
}

// poolReady waits, up to 30 s, until the daemon's node pool is full, as it
// is when pods arrive no faster than it refills; it returns how long that
// took.
func (nb *nodeBench) poolReady() time.Duration {
	start := time.Now()
	for nb.pool > 0 && time.Since(start) < 30*time.Second {
		if v, _ := tryMetric(nb.b, nb.e.metrics, `tailscale_cni_pool_nodes{state="ready"}`); int(v) >= nb.pool {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// latency ADDs the anchor and then latencyPods pods one at a time, each
// timed from ADD's start to its return and to the anchor's first ping
// reply. With a node pool, each ADD comes once the pool is full again.
func (nb *nodeBench) latency() {
	b := nb.b
	anchor, _ := nb.addOne("anchor")
	firstReply(b, anchor, anchor.tailnetIPv4(b).String())
	nb.pods = []*pod{anchor}
	for i := 1; len(nb.pods) < min(nb.n, latencyPods+1); i++ {
		nb.rssPoint()
		nb.poolWait += nb.poolReady()
		start := time.Now()
		p, took := nb.addOne(fmt.Sprintf("p%03d", i))
		reached := firstReply(b, anchor, p.tailnetIPv4(b).String())
		nb.pods = append(nb.pods, p)
		nb.addLat = append(nb.addLat, took)
		nb.readyLat = append(nb.readyLat, reached.Sub(start))
	}
	nb.takesLatency = nb.poolTakes()
}

// poolTakes is how many ADDs took a pool node, and how many did not.
func (nb *nodeBench) poolTakes() [2]float64 {
	v := func(r string) float64 {
		f, _ := tryMetric(nb.b, nb.e.metrics, `tailscale_cni_pool_takes_total{result="`+r+`"}`)
		return f
	}
	return [2]float64{v("hit"), v("miss_empty") + v("miss_tags")}
}

// fill ADDs the rest of the pods, fillConcurrency at a time, pausing at the
// pod counts whose RSS the benchmark reports; then every pod must answer a
// peer.
func (nb *nodeBench) fill() {
	b := nb.b
	start := time.Now()
	var paused time.Duration
	for len(nb.pods) < nb.n {
		nb.rssPoint()
		next := nb.n
		for _, stop := range []int{10, 30} {
			if len(nb.pods) < stop && stop < next {
				next = stop
			}
		}
		batch := make([]*pod, next-len(nb.pods))
		lat := make([]time.Duration, len(batch))
		var wg sync.WaitGroup
		sem := make(chan struct{}, fillConcurrency)
		base := len(nb.pods)
		for i := range batch {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				batch[i], lat[i] = nb.addOne(fmt.Sprintf("p%03d", base+i))
			})
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		nb.pods = append(nb.pods, batch...)
		nb.fillLat = append(nb.fillLat, lat...)
		t := time.Now()
		nb.rssPoint()
		paused += time.Since(t)
	}
	nb.fillTook = time.Since(start) - paused
	nb.takesFill = nb.poolTakes()
	t := time.Now()
	nb.reachAllTook, _, nb.unreached = reachEvery(b, nb.pods, t, time.Minute)
	if len(nb.unreached) > 0 {
		b.Errorf("%d of %d pods never answered a peer's ping within a minute: %s", len(nb.unreached), len(nb.pods), strings.Join(nb.unreached, " "))
		explainUnreached(b, nb.e, nb.pods[0], nb.pods, nb.unreached)
	}
	nb.rssPoint()
	nb.goroutines = daemonMetric(b, nb.e.metrics, "go_goroutines")
	saveProfile(b, nb.profiles, nb.debug, "heap", fmt.Sprintf("heap-%d.pb.gz", nb.n))
	nb.heapPerPod = daemonMetric(b, nb.e.metrics, "go_memstats_heap_inuse_bytes") / float64(nb.n) / (1 << 20)
}

// idle measures the daemon's CPU and log lines over a minute in which
// nothing happens. It starts a minute after the last traffic (the pings
// that checked every pod): magicsock keeps re-STUNing every 20-26 s for
// 45 s after a peer was last active, which is start-up, not idling.
func (nb *nodeBench) idle() {
	const window = 60 * time.Second
	time.Sleep(time.Minute)
	pid := nb.e.daemon.PID()
	var wg sync.WaitGroup
	if nb.profiles != "" {
		wg.Go(func() {
			saveProfile(nb.b, nb.profiles, nb.debug, fmt.Sprintf("profile?seconds=%d", int(window.Seconds())), fmt.Sprintf("cpu-idle-%d.pb.gz", nb.n))
		})
	}
	l0 := strings.Count(nb.e.daemonLog.String(), "\n")
	c0, t0 := procCPUSeconds(nb.b, pid), time.Now()
	time.Sleep(window)
	c1, t1 := procCPUSeconds(nb.b, pid), time.Now()
	l1 := strings.Count(nb.e.daemonLog.String(), "\n")
	wg.Wait()
	nb.idleCPU = 100 * (c1 - c0) / t1.Sub(t0).Seconds()
	nb.idleLogLines = l1 - l0
}

// restart SIGKILLs the daemon (its pods' TUNs go with it), starts it again,
// and times until every pod answers a peer.
func (nb *nodeBench) restart() {
	b, e := nb.b, nb.e
	e.stopDaemon(true)
	start := time.Now()
	var wg sync.WaitGroup
	var each []time.Duration
	wg.Go(func() { nb.restartAll, each, nb.unrecovered = reachEvery(b, nb.pods, start, time.Minute) })
	e.mu.Lock()
	e.daemonLog = &testkit.Buffer{}
	e.daemon = e.launchDaemon(b, e.daemonEnv(), e.daemonLog)
	d := e.daemon
	e.mu.Unlock()
	if nb.profiles != "" {
		// The daemon serves its profiles before it recovers: profile the
		// recovery from (nearly) its start.
		wg.Go(func() {
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if c, err := net.Dial("tcp", nb.debug); err == nil {
					c.Close()
					break
				}
			}
			saveProfile(b, nb.profiles, nb.debug, "profile?seconds=10", fmt.Sprintf("cpu-restart-%d.pb.gz", len(nb.pods)))
		})
	}
	ctx, cancel := context.WithTimeout(nb.ctx, 2*time.Minute)
	defer cancel()
	mark := fmt.Sprintf("recovered %d pods", len(nb.pods))
	if err := d.WaitFor(ctx, mark); err != nil {
		b.Fatalf("restarted daemon never said %q: %v", mark, err)
	}
	nb.recovered = time.Since(start)
	wg.Wait()
	if len(each) > 0 {
		nb.restartP50 = percentile(each, 0.5)
	}
	if len(nb.unrecovered) > 0 {
		b.Errorf("after the restart, %d of %d pods never answered a peer's ping within a minute: %s", len(nb.unrecovered), len(nb.pods), strings.Join(nb.unrecovered, " "))
	}
}

type throughputResult struct {
	ours, stock, plain      []float64 // Gbit/s per run
	oursCPU, stockCPU       []float64 // CPU seconds per Gbit per run
	oursMedian, stockMedian float64
}

// throughput runs iperf3 five times pod to pod through the daemon and five
// times between two stock tailscaled (each in a bridge-only netns of its
// own), interleaved, with the CPU the daemons spent per Gbit moved.
func (nb *nodeBench) throughput() {
	const runs, secs = 5, 5
	b, e := nb.b, nb.e
	a, c := nb.pods[1], nb.pods[2]
	plainConf := e.confList("")
	s1, s2 := e.newPod("stock1"), e.newPod("stock2")
	for _, p := range []*pod{s1, s2} {
		if _, err := e.cni.AddNetworkList(nb.ctx, plainConf, e.rt(p)); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = e.cni.DelNetworkList(context.Background(), plainConf, e.rt(p)) })
	}
	_, err1 := e.stockTailscaled(b, s1, 1)
	ip2, err2 := e.stockTailscaled(b, s2, 2)
	if err1 != nil || err2 != nil {
		b.Fatalf("stock tailscaled pair: %v %v", err1, err2)
	}
	// Until s1 has s2 in its netmap, ping fails at once with "network is
	// unreachable"; retry for a while.
	var out []byte
	var err error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if out, err = exec.Command("ip", "netns", "exec", s1.netns, "ping", "-c", "1", "-w", "5", ip2).CombinedOutput(); err == nil {
			break
		}
	}
	if err != nil {
		b.Fatalf("stock tailscaled pair cannot ping: %v\n%s", err, out)
	}
	var r throughputResult
	cpuOf := func(pids ...int) float64 {
		s := 0.0
		for _, p := range pids {
			s += procCPUSeconds(b, p)
		}
		return s
	}
	measure := func(client, server *pod, addr string, pids ...int) (gbps, cpuPerGbit float64) {
		c0 := cpuOf(pids...)
		gbps = iperf(b, client, server, addr, secs)
		c1 := cpuOf(pids...)
		return gbps, (c1 - c0) / (gbps * secs)
	}
	dpid := e.daemon.PID()
	e.mu.Lock()
	spids := []int{e.stock[1].PID(), e.stock[2].PID()}
	e.mu.Unlock()
	for range runs {
		g, cpu := measure(a, c, c.tailnetIPv4(b).String(), dpid)
		r.ours, r.oursCPU = append(r.ours, g), append(r.oursCPU, cpu)
		g, cpu = measure(s1, s2, ip2, spids...)
		r.stock, r.stockCPU = append(r.stock, g), append(r.stockCPU, cpu)
	}
	r.plain = append(r.plain, iperf(b, a, c, c.result.IPs[0].Address.IP.String(), secs))
	r.oursMedian, r.stockMedian = medianOf(r.ours), medianOf(r.stock)
	nb.throughputRes = r
}

func (nb *nodeBench) report() {
	b := nb.b
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	b.ReportMetric(percentile(nb.addLat, 0.5).Seconds(), "add-p50-s")
	b.ReportMetric(percentile(nb.addLat, 0.95).Seconds(), "add-p95-s")
	b.ReportMetric(percentile(nb.readyLat, 0.5).Seconds(), "ready-p50-s")
	b.ReportMetric(percentile(nb.readyLat, 0.95).Seconds(), "ready-p95-s")
	b.Logf("ADD p50 %v p95 %v; ADD-to-reachable from a peer p50 %v p95 %v (%d pods one at a time; Headscale batching %s; node pool %d: %.0f hits, %.0f misses, %v waiting for it to refill)",
		ms(percentile(nb.addLat, 0.5)), ms(percentile(nb.addLat, 0.95)),
		ms(percentile(nb.readyLat, 0.5)), ms(percentile(nb.readyLat, 0.95)), len(nb.addLat), nb.batching,
		nb.pool, nb.takesLatency[0], nb.takesLatency[1], nb.poolWait.Round(100*time.Millisecond))
	if len(nb.fillLat) > 0 {
		b.ReportMetric(percentile(nb.fillLat, 0.5).Seconds(), "fill-add-p50-s")
		b.Logf("filling to %d pods, %d ADDs at once: ADD p50 %v p95 %v (pool %.0f hits, %.0f misses); %d pods in %v; %d of %d pods answered a peer's ping, the last %v later",
			nb.n, fillConcurrency, ms(percentile(nb.fillLat, 0.5)), ms(percentile(nb.fillLat, 0.95)),
			nb.takesFill[0]-nb.takesLatency[0], nb.takesFill[1]-nb.takesLatency[1],
			len(nb.fillLat), nb.fillTook.Round(100*time.Millisecond), len(nb.pods)-len(nb.unreached), len(nb.pods), ms(nb.reachAllTook))
	}
	counts := []int{}
	for n := range nb.rssAt {
		counts = append(counts, n)
	}
	slices.Sort(counts)
	var line, anonLine []string
	for _, n := range counts {
		r := nb.rssAt[n]
		per := float64(r.total-nb.rss0.total) / 1024 / float64(n)
		anon := float64(r.anon-nb.rss0.anon) / 1024 / float64(n)
		b.ReportMetric(per, fmt.Sprintf("MiB/pod@%d", n))
		b.ReportMetric(anon, fmt.Sprintf("anon-MiB/pod@%d", n))
		line = append(line, fmt.Sprintf("%.2f@%d", per, n))
		anonLine = append(anonLine, fmt.Sprintf("%.2f@%d", anon, n))
	}
	b.Logf("daemon RSS %d MiB with no pods (anonymous %d MiB); per extra pod, MiB@pods: %s; anonymous: %s",
		nb.rss0.total/1024, nb.rss0.anon/1024, strings.Join(line, " "), strings.Join(anonLine, " "))
	b.Logf("at %d pods: RSS %d MiB (anonymous %d MiB), live heap %.2f MiB per pod, %.0f goroutines (%.1f per pod)",
		nb.n, nb.rssAt[nb.n].total/1024, nb.rssAt[nb.n].anon/1024, nb.heapPerPod, nb.goroutines, nb.goroutines/float64(nb.n))
	b.ReportMetric(nb.idleCPU, "idle-cpu-%")
	b.ReportMetric(float64(nb.idleLogLines)/float64(nb.n), "idle-log-lines/pod/min")
	b.Logf("idle daemon at %d pods: %.2f%% of one core over 60 s, %d log lines", nb.n, nb.idleCPU, nb.idleLogLines)
	b.ReportMetric(nb.restartAll.Seconds(), "restart-all-reachable-s")
	b.Logf("SIGKILLed daemon restarted: said it recovered %d pods after %v; %d of %d pods answered a peer's ping again, the last after %v (p50 pod %v)",
		len(nb.pods), ms(nb.recovered), len(nb.pods)-len(nb.unrecovered), len(nb.pods), ms(nb.restartAll), ms(nb.restartP50))
	r := nb.throughputRes
	b.ReportMetric(r.oursMedian, "tailnet-Gbit/s")
	b.ReportMetric(r.stockMedian, "stock-tailscaled-Gbit/s")
	b.ReportMetric(medianOf(r.oursCPU), "tailnet-cpu-s/Gbit")
	b.ReportMetric(medianOf(r.stockCPU), "stock-cpu-s/Gbit")
	if r.stockMedian > 0 {
		b.ReportMetric(r.oursMedian/r.stockMedian, "tailnet/stock")
	}
	f := func(xs []float64) string {
		var s []string
		for _, x := range xs {
			s = append(s, fmt.Sprintf("%.2f", x))
		}
		return strings.Join(s, " ")
	}
	b.Logf("iperf3 5 s x5 interleaved: tailnet pod->pod median %.2f Gbit/s (runs %s; daemon CPU %.2f s/Gbit), stock tailscaled pair median %.2f Gbit/s (runs %s; both tailscaleds' CPU %.2f s/Gbit): %.2fx; bridge veth %.2f Gbit/s",
		r.oursMedian, f(r.ours), medianOf(r.oursCPU), r.stockMedian, f(r.stock), medianOf(r.stockCPU), r.oursMedian/r.stockMedian, r.plain[0])
	b.Logf("load average at the end: %s", loadAvg())
}

// deleteAll DELs every pod, fillConcurrency at a time.
func (nb *nodeBench) deleteAll() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, fillConcurrency)
	for _, p := range nb.pods {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := nb.e.del(nb.ctx, p); err != nil {
				nb.b.Errorf("DEL %s: %v", p.name, err)
			}
		})
	}
	wg.Wait()
}
