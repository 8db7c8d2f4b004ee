package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
	"tsymbiote.dhouti.dev/testkit/topology"
)

// TestMain keeps every tailscale thing in this process talking only to the
// local Headscale (no log upload, plain-HTTP DERP, no gateway probes), and
// removes the binaries the tests built.
func TestMain(m *testing.M) { os.Exit(headscaletest.Main(m)) }

// demo is the demo's topology: Headscale, tailscaled daemons with one
// adapter process each, and the WebUI (--dev --generate-auth, as make demo
// runs it) in this process.
type demo struct {
	hs     *headscaletest.Server
	tp     *topology.Topology
	url    string
	stopUI context.CancelFunc
	uiDone chan error
}

func startDemo(t testing.TB, nodes int, perNode bool, mod func(*Config)) *demo {
	t.Helper()
	testkit.Binary(t, "tailscaled")
	testkit.Binary(t, "tailscale")
	d := &demo{hs: headscaletest.Start(t, headscaletest.Options{})}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	var logf func(string, ...any)
	if nodes <= 10 {
		logf = t.Logf
	}
	tp, err := topology.Start(ctx, d.hs, topology.Options{
		Nodes: nodes, NodeTags: []string{headscaletest.TagTest}, AdapterPerNode: perNode, Logf: logf,
		AdapterBin: testkit.BuildOnce(t, "tsymbiote.dhouti.dev/adapter/cmd/tsymbiote-adapter"),
	})
	if err != nil {
		t.Fatal(err)
	}
	d.tp = tp
	t.Cleanup(tp.Close)
	t.Logf("topology: %d tailscaled and %d adapters up in %v", nodes, len(tp.Adapters), time.Since(start).Round(time.Millisecond))
	d.url, d.stopUI, d.uiDone = startWebUI(t, d.hs, mod)
	return d
}

func startWebUI(t testing.TB, hs *headscaletest.Server, mod func(*Config)) (string, context.CancelFunc, chan error) {
	t.Helper()
	return startWebUIReady(t, hs, mod, nil)
}

// startWebUIReady is startWebUI that also hands Ready to readyc.
func startWebUIReady(t testing.TB, hs *headscaletest.Server, mod func(*Config), extra chan Ready) (string, context.CancelFunc, chan error) {
	t.Helper()
	cp, err := controlplane.New(logger.Discard, controlplane.Config{HeadscaleURL: hs.URL, HeadscaleAPIKey: controlplane.Secret(hs.APIKey)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		AdapterPort: DefaultAdapterPort, Dev: true, GenerateAuth: true, Hostname: "webui-test",
		HostnamePrefix: DefaultHostnamePrefix, Logout: true, Port: "0",
		ControlURL: hs.URL, ControlPlane: cp, RefreshInterval: 2 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	readyc := make(chan Ready, 1)
	cfg.OnReady = func(r Ready) { readyc <- r }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logf := t.Logf
	if cfg.quiet {
		logf = func(string, ...any) {}
	}
	go func() { done <- Run(ctx, logf, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Logf("webui: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("webui did not stop within 30s")
		}
	})
	select {
	case r := <-readyc:
		if extra != nil {
			extra <- r
		}
		return r.URL, cancel, done
	case err := <-done:
		t.Fatalf("webui: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatalf("webui not ready in 2 minutes")
	}
	return "", nil, nil
}

// waitGraph polls the graph until every daemon is a host that sees every
// other daemon, and returns it.
func (d *demo) waitGraph(t testing.TB) *Graph {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var g Graph
		code := getJSON(t, d.url+"/api/graph", &g)
		missing := d.missing(&g)
		if code == 200 && missing == "" {
			return &g
		}
		if time.Now().After(deadline) {
			t.Fatalf("graph never complete: %s (errors %v)", missing, g.Errors)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// missing says what the graph lacks, or "" when it is complete.
func (d *demo) missing(g *Graph) string {
	byName := map[string]GraphNode{}
	for _, n := range g.Nodes {
		byName[n.Name] = n
	}
	edges := map[string]GraphEdge{}
	for _, e := range g.Edges {
		edges[e.Source+">"+e.Target] = e
	}
	for _, dm := range d.tp.Daemons {
		n, ok := byName[dm.Name]
		if !ok || len(n.Hosts) == 0 {
			return dm.Name + " is not a host"
		}
	}
	for _, a := range d.tp.Adapters {
		if _, ok := byName[a.Name]; !ok {
			return a.Name + " not in the graph"
		}
	}
	// Until a host knows a peer's home DERP region it cannot reach it
	// before a direct path exists: a disco ping then fails.
	for _, e := range g.Edges {
		if e.DERPRegion == "" {
			return "edge " + e.ID + " has no DERP region yet"
		}
	}
	for _, a := range d.tp.Daemons {
		for _, b := range d.tp.Daemons {
			if a != b {
				if _, ok := edges[byName[a.Name].ID+">"+byName[b.Name].ID]; !ok {
					return "no edge " + a.Name + " -> " + b.Name
				}
			}
		}
	}
	return ""
}

func (d *demo) nodeIDs(g *Graph, prefix string) []string {
	var ids []string
	for _, n := range g.Nodes {
		if strings.HasPrefix(n.Name, prefix) {
			ids = append(ids, n.ID)
		}
	}
	return ids
}

// TestDemoTopology runs the WebUI against the demo's shape: four real
// tailscaled, an adapter process attached to each, all on a real Headscale.
func TestDemoTopology(t *testing.T) {
	const nodes = 4
	d := startDemo(t, nodes, true, nil)
	g := d.waitGraph(t)
	// 4 daemons + 4 adapters + the WebUI.
	if len(g.Nodes) != 2*nodes+1 {
		t.Errorf("%d nodes, want %d: %v", len(g.Nodes), 2*nodes+1, names(g))
	}
	// Each daemon sees the other 3 daemons, the 4 adapters and the WebUI.
	if want := nodes * (2*nodes + 1 - 1); len(g.Edges) != want {
		t.Errorf("%d edges, want %d", len(g.Edges), want)
	}
	if len(g.Hosts) != nodes || len(g.Adapters) != nodes || len(g.Errors) != 0 {
		t.Errorf("%d hosts, %d adapters, errors %v", len(g.Hosts), len(g.Adapters), g.Errors)
	}
	t.Logf("graph: %d nodes, %d edges, %d hosts, %d adapters", len(g.Nodes), len(g.Edges), len(g.Hosts), len(g.Adapters))

	t.Run("PingAllFullMesh", func(t *testing.T) {
		pingAll := func(typ PingType) (failed []Result) {
			st := startFanoutHTTP(t, d.url, FanoutRequest{Kind: "ping", PingType: typ})
			start := time.Now()
			results, done := readEvents(t, d.url+"/api/fanouts/"+st.ID+"/events", nil)
			elapsed := time.Since(start)
			if st.Total != len(g.Edges) || len(results) != st.Total || done.Completed != st.Total {
				t.Fatalf("%s: total %d (edges %d), %d results, done %+v", typ, st.Total, len(g.Edges), len(results), done)
			}
			pairs := map[string]bool{}
			paths := map[PathKind]int{}
			var sum float64
			for _, r := range results {
				pairs[r.HostNode+">"+r.Peer] = true
				paths[r.Path]++
				sum += r.LatencyMS
				if !r.OK || r.LatencyMS <= 0 || r.Path == "" {
					failed = append(failed, r)
				}
			}
			for _, e := range g.Edges {
				if !pairs[e.Source+">"+e.Target] {
					t.Errorf("%s: no result for edge %s", typ, e.ID)
				}
			}
			t.Logf("%s ping all: %d results (one per host,peer pair: %d distinct) in %v, %d failed, paths %v, mean latency %.2f ms",
				typ, len(results), len(pairs), elapsed.Round(time.Millisecond), done.Failed, paths, sum/float64(len(results)))
			return failed
		}
		// Disco pings need no WireGuard session, but the node that joined
		// last (the WebUI, a moment ago) may not have its endpoints and
		// home DERP at its peers yet; TSMP goes through WireGuard, whose
		// first handshake towards such a node is retried only 5s later
		// (wireguard-go's RekeyTimeout). Each gets up to three rounds, and
		// every pair must then answer with a latency and a path.
		for _, typ := range []PingType{PingDisco, PingTSMP} {
			var failed []Result
			for round := 1; round <= 3; round++ {
				if failed = pingAll(typ); len(failed) == 0 {
					break
				}
				for _, r := range failed {
					t.Logf("%s round %d: %s -> %s: %q", typ, round, r.HostName, r.PeerName, r.Error)
				}
			}
			for _, r := range failed {
				t.Errorf("%s %s -> %s: ok=%v latency=%v path=%q error=%q", typ, r.HostName, r.PeerName, r.OK, r.LatencyMS, r.Path, r.Error)
			}
		}
		// After pings the graph's paths are known.
		var g2 Graph
		getJSON(t, d.url+"/api/graph", &g2)
		paths := map[PathKind]int{}
		for _, e := range g2.Edges {
			paths[e.Path]++
		}
		t.Logf("edge paths after pinging: %v", paths)
	})

	t.Run("DNSFanout", func(t *testing.T) {
		st := startFanoutHTTP(t, d.url, FanoutRequest{Kind: "dns", DNSName: "node-01.tsymbiote.test", DNSType: "A"})
		results, done := readEvents(t, d.url+"/api/fanouts/"+st.ID+"/events", nil)
		if st.Total != nodes || done.Failed != 0 {
			t.Fatalf("total %d, done %+v, results %+v", st.Total, done, results)
		}
		t.Logf("DNS from every host: %s %v", results[0].Rcode, results[0].Answers)
	})

	t.Run("Details", func(t *testing.T) {
		host := g.Hosts[0].ID
		for _, what := range []string{"status", "prefs", "dns", "serve", "derpmap", "netcheck"} {
			var v map[string]any
			start := time.Now()
			if code := getJSON(t, d.url+"/api/details?what="+what+"&host="+urlq(host), &v); code != 200 {
				t.Errorf("%s: %d %v", what, code, v)
				continue
			}
			t.Logf("details %s: %d fields in %v", what, len(v), time.Since(start).Round(time.Millisecond))
		}
	})

	t.Run("Logs", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url+"/api/logs?host="+urlq(g.Hosts[0].ID), nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		// Pings make tailscaled log. The goroutine must not touch t (it may
		// still run after a log line ends the read), so it reports on a
		// channel that the subtest drains before it returns.
		pinged := make(chan error, 1)
		go func() {
			time.Sleep(500 * time.Millisecond)
			b, _ := json.Marshal(FanoutRequest{Kind: "ping", PingType: "tsmp", Hosts: []string{g.Hosts[0].ID}})
			r, err := post(d.url+"/api/fanouts", "application/json", strings.NewReader(string(b)))
			if err == nil {
				r.Body.Close()
				if r.StatusCode != http.StatusAccepted {
					err = fmt.Errorf("start fan-out: %s", r.Status)
				}
			}
			pinged <- err
		}()
		defer func() {
			if err := <-pinged; err != nil {
				t.Errorf("pinging to make tailscaled log: %v", err)
			}
		}()
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "event: line") {
				sc.Scan()
				t.Logf("first log line: %.120s", sc.Text())
				return
			}
		}
		t.Errorf("no log line within 20s: %v", sc.Err())
	})

	t.Run("Cancel", func(t *testing.T) {
		// Twenty pings per pair, one call at a time: long enough to cancel.
		st := startFanoutHTTP(t, d.url, FanoutRequest{Kind: "ping", Count: 20, Concurrency: 1, PerHost: 1})
		results, _ := readEvents(t, d.url+"/api/fanouts/"+st.ID+"/events", func(n int) bool { return n >= 1 })
		start := time.Now()
		res, err := post(d.url+"/api/fanouts/"+st.ID+"/cancel", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		_, done := readEvents(t, d.url+"/api/fanouts/"+st.ID+"/events", nil)
		if !done.Canceled || done.Completed >= done.Total {
			t.Fatalf("after cancel: %+v", done)
		}
		t.Logf("cancel after %d result(s): done in %v with %d of %d calls made", len(results), time.Since(start).Round(time.Millisecond), done.Completed, done.Total)
	})

	t.Run("Metrics", func(t *testing.T) {
		res, err := http.Get(d.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var lines []string
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "tsymbiote_webui_adapter_calls_total{") && (strings.Contains(sc.Text(), `method="Ping"`) || strings.Contains(sc.Text(), `method="PingPeers"`)) {
				lines = append(lines, sc.Text())
			}
		}
		adapters := map[string]bool{}
		for _, l := range lines {
			a, _, _ := strings.Cut(strings.TrimPrefix(l, `tsymbiote_webui_adapter_calls_total{adapter="`), `"`)
			adapters[a] = true
		}
		if len(adapters) != nodes {
			t.Errorf("Ping or PingPeers call metrics for %d adapters, want %d: %v", len(adapters), nodes, lines)
		}
	})

	// Last: it kills an adapter.
	t.Run("AdapterGoneMidFanout", func(t *testing.T) {
		victim := d.tp.Adapters[1]
		victimHost := d.tp.Daemons[1].Name
		// Only daemons as peers: pings to the victim's own tsnet node
		// would fail for everyone once it is gone.
		peers := d.nodeIDs(g, "node-")
		// Frozen first, so that none of its calls can finish (a fan-out
		// here takes tens of milliseconds), then killed once the others
		// have answered.
		victim.Freeze()
		st := startFanoutHTTP(t, d.url, FanoutRequest{Kind: "ping", Peers: peers, PerHost: 1, TimeoutMS: 1000})
		first, _ := readEvents(t, d.url+"/api/fanouts/"+st.ID+"/events", func(n int) bool { return n >= 2 })
		victim.Stop()
		t.Logf("killed %s (serving %s) after %d results", victim.Name, victimHost, len(first))
		results, done := readEvents(t, d.url+"/api/fanouts/"+st.ID+"/events", nil)
		if done.Completed != done.Total || done.Total != nodes*(nodes-1) {
			t.Fatalf("done %+v", done)
		}
		var victimFailed, othersFailed int
		for _, r := range results {
			switch {
			case r.Adapter == victim.Name && !r.OK:
				victimFailed++
			case r.Adapter != victim.Name && !r.OK:
				othersFailed++
				t.Errorf("call from %s via %s failed: %s", r.HostName, r.Adapter, r.Error)
			}
		}
		if victimFailed != nodes-1 {
			t.Errorf("%d of %d calls through %s failed, want all", victimFailed, nodes-1, victim.Name)
		}
		var errs []string
		for _, r := range results {
			if !r.OK && !slices.Contains(errs, r.Code+": "+r.Error) {
				errs = append(errs, r.Code+": "+r.Error)
			}
		}
		t.Logf("adapter gone: %d/%d calls through it failed, %d others failed; errors %q; fan-out took %.0f ms",
			victimFailed, nodes-1, othersFailed, errs, done.ElapsedMS)
	})
}

func names(g *Graph) []string {
	var out []string
	for _, n := range g.Nodes {
		out = append(out, n.Name)
	}
	return out
}

func urlq(s string) string {
	return strings.NewReplacer("|", "%7C", "/", "%2F", " ", "%20", "&", "%26").Replace(s)
}

var _ = fmt.Sprint
