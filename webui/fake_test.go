package webui

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// fakeAdapter is an in-process adapter for one target over real gRPC on
// loopback: unit tests of the WebUI's plumbing. The real-topology tests use
// real adapters.
type fakeAdapter struct {
	adapterv1.UnimplementedAdapterServiceServer
	self  *adapterv1.Node
	peers []*adapterv1.Node
	delay time.Duration // per ping
	block bool          // pings wait for their deadline
	// rtt, when set, decides each ping instead of delay: how long it
	// takes (the round trip it reports) and, when fail is set, that the
	// peer did not answer. The browser benchmark spreads it per pair.
	rtt func(peer string) (d time.Duration, fail bool)
	// noPingPeers makes it an adapter from before PingPeers.
	noPingPeers bool
	// maxConc is the most peers PingPeers takes at once (256 when zero):
	// 64 makes it an adapter from before 256.
	maxConc int32

	mu    sync.Mutex
	pings int
	conc  int32 // the concurrency of the last PingPeers it took
}

func (f *fakeAdapter) ListTargets(context.Context, *adapterv1.ListTargetsRequest) (*adapterv1.ListTargetsResponse, error) {
	return &adapterv1.ListTargetsResponse{Targets: []*adapterv1.Target{{Name: "sock", Reachable: true}}, DefaultTarget: "sock"}, nil
}

func (f *fakeAdapter) Status(context.Context, *adapterv1.StatusRequest) (*adapterv1.StatusResponse, error) {
	return &adapterv1.StatusResponse{Target: "sock", Version: "1.102.5", BackendState: "Running", Self: f.self, Peers: f.peers}, nil
}

func (f *fakeAdapter) Ping(ctx context.Context, req *adapterv1.PingRequest) (*adapterv1.PingResponse, error) {
	return f.ping(ctx, req.Peer)
}

// PingPeers pings like Ping, req.Concurrency peers at once (16 when
// zero), as the real adapter does; block holds every ping until the
// stream ends.
func (f *fakeAdapter) PingPeers(req *adapterv1.PingPeersRequest, s adapterv1.AdapterService_PingPeersServer) error {
	if f.noPingPeers {
		return status.Error(codes.Unimplemented, "method PingPeers not implemented")
	}
	if len(req.Peers) == 0 || req.Concurrency < 0 || req.Concurrency > cmp.Or(f.maxConc, 256) {
		return status.Errorf(codes.InvalidArgument, "%d peers, concurrency %d", len(req.Peers), req.Concurrency)
	}
	f.mu.Lock()
	f.conc = req.Concurrency
	f.mu.Unlock()
	ctx := s.Context()
	var sendMu sync.Mutex // Send is not safe for concurrent use
	sem := make(chan struct{}, cmp.Or(req.Concurrency, 16))
	var wg sync.WaitGroup
	defer wg.Wait()
	for i, p := range req.Peers {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			start := time.Now()
			resp, err := f.ping(ctx, p)
			if err != nil {
				return // the stream ended
			}
			sendMu.Lock()
			defer sendMu.Unlock()
			_ = s.Send(&adapterv1.PingPeersResponse{Index: int32(i), Peer: p, Ping: resp, Took: durationpb.New(time.Since(start))})
		}()
	}
	return nil
}

func (f *fakeAdapter) ping(ctx context.Context, peer string) (*adapterv1.PingResponse, error) {
	f.mu.Lock()
	f.pings++
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	wait, fail := f.delay, false
	if f.rtt != nil {
		wait, fail = f.rtt(peer)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if fail {
		return &adapterv1.PingResponse{Ip: peer, Results: []*adapterv1.PingResult{{Seq: 1, Error: "no UDP or DERP addr"}}}, nil
	}
	lat := durationpb.New(3 * time.Millisecond)
	if f.rtt != nil {
		lat = durationpb.New(wait)
	}
	return &adapterv1.PingResponse{
		Ip: peer, Succeeded: 1, AvgLatency: lat, MinLatency: lat, MaxLatency: lat,
		Results: []*adapterv1.PingResult{{Seq: 1, Latency: lat, Path: adapterv1.PathKind_PATH_KIND_DIRECT, Endpoint: "127.0.0.1:41641"}},
	}, nil
}

func (f *fakeAdapter) QueryDNS(_ context.Context, req *adapterv1.QueryDNSRequest) (*adapterv1.QueryDNSResponse, error) {
	if strings.HasPrefix(req.Name, "nx.") {
		return &adapterv1.QueryDNSResponse{Rcode: "NXDOMAIN"}, nil
	}
	return &adapterv1.QueryDNSResponse{Rcode: "NOERROR", Answers: []*adapterv1.DNSAnswer{{Name: req.Name, Type: "A", Data: "100.64.0.1"}}}, nil
}

func (f *fakeAdapter) Prefs(context.Context, *adapterv1.PrefsRequest) (*adapterv1.PrefsResponse, error) {
	return &adapterv1.PrefsResponse{Hostname: f.self.Hostname, WantRunning: true}, nil
}

func (f *fakeAdapter) StreamLogs(_ *adapterv1.StreamLogsRequest, s adapterv1.AdapterService_StreamLogsServer) error {
	for i := range 3 {
		if err := s.Send(&adapterv1.StreamLogsResponse{Line: fmt.Sprintf("line %d", i)}); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, "daemon went away")
}

// fakeMesh starts n fake adapters whose nodes all see each other, and
// returns their addresses.
func fakeMesh(t testing.TB, n int, tweak func(i int, f *fakeAdapter)) ([]string, []*fakeAdapter) {
	t.Helper()
	var nodes []*adapterv1.Node
	for i := range n {
		nodes = append(nodes, &adapterv1.Node{
			Id: fmt.Sprintf("n%02d", i), Hostname: fmt.Sprintf("node-%02d", i), Os: "linux", Online: true,
			TailscaleIps: []string{fmt.Sprintf("100.64.0.%d", i+1), fmt.Sprintf("fd7a:115c:a1e0::%d", i+1)},
			Tags:         []string{"tag:test"}, CurrentAddress: "127.0.0.1:41641",
		})
	}
	var addrs []string
	var fakes []*fakeAdapter
	for i := range n {
		f := &fakeAdapter{self: nodes[i]}
		for j := range n {
			if j != i {
				f.peers = append(f.peers, nodes[j])
			}
		}
		if tweak != nil {
			tweak(i, f)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer()
		adapterv1.RegisterAdapterServiceServer(gs, f)
		go func() { _ = gs.Serve(ln) }()
		t.Cleanup(gs.Stop)
		addrs = append(addrs, ln.Addr().String())
		fakes = append(fakes, f)
	}
	return addrs, fakes
}

func newTestServer(t testing.TB, addrs []string, g *gate) (*Server, *httptest.Server) {
	t.Helper()
	return newTestServerDisc(t, staticDiscoverer(addrs), g)
}

// newTestServerDisc is newTestServer with the adapters disc lists.
func newTestServerDisc(t testing.TB, disc Discoverer, g *gate) (*Server, *httptest.Server) {
	t.Helper()
	var d net.Dialer
	m := newMetrics()
	reg := NewRegistry(t.Logf, disc, d.DialContext, m, 5*time.Second)
	t.Cleanup(reg.Close)
	if err := reg.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if g == nil {
		g = &gate{}
	}
	s := NewServer(ctx, t.Logf, reg, nil, g, m, 5*time.Second)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return s, hs
}

func getJSON(t testing.TB, url string, v any) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if v != nil {
		if err := json.NewDecoder(res.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: decoding: %v", url, err)
		}
	}
	return res.StatusCode
}

func startFanoutHTTP(t testing.TB, base string, req FanoutRequest) FanoutState {
	t.Helper()
	b, _ := json.Marshal(req)
	res, err := post(base+"/api/fanouts", "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var st FanoutState
	if res.StatusCode != http.StatusAccepted {
		var e map[string]string
		_ = json.NewDecoder(res.Body).Decode(&e)
		t.Fatalf("start fan-out: %s: %v", res.Status, e)
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// readEvents reads a fan-out's event stream to its end (or until stop
// returns true for a result) and returns the results and the final state.
func readEvents(t testing.TB, url string, stop func(n int) bool) ([]Result, *FanoutState) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events: content type %q", ct)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var (
		event   string
		results []Result
	)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := strings.TrimPrefix(line, "data: ")
			switch event {
			case "result":
				var r Result
				if err := json.Unmarshal([]byte(data), &r); err != nil {
					t.Fatal(err)
				}
				results = append(results, r)
				if stop != nil && stop(len(results)) {
					return results, nil
				}
			case "results":
				var rs []Result
				if err := json.Unmarshal([]byte(data), &rs); err != nil {
					t.Fatal(err)
				}
				if len(rs) == 0 || len(rs) > maxBatch {
					t.Fatalf("results event with %d results, want 1 to %d", len(rs), maxBatch)
				}
				results = append(results, rs...)
				if stop != nil && stop(len(results)) {
					return results, nil
				}
			case "done":
				var st FanoutState
				if err := json.Unmarshal([]byte(data), &st); err != nil {
					t.Fatal(err)
				}
				return results, &st
			}
		}
	}
	t.Fatalf("event stream ended without done: %v", sc.Err())
	return nil, nil
}

func TestFakeGraphAndPingAll(t *testing.T) {
	addrs, _ := fakeMesh(t, 4, nil)
	_, hs := newTestServer(t, addrs, nil)
	var g Graph
	if code := getJSON(t, hs.URL+"/api/graph", &g); code != 200 {
		t.Fatalf("graph: %d", code)
	}
	if len(g.Nodes) != 4 || len(g.Edges) != 12 || len(g.Hosts) != 4 {
		t.Fatalf("graph: %d nodes, %d edges, %d hosts; want 4, 12, 4 (errors %v)", len(g.Nodes), len(g.Edges), len(g.Hosts), g.Errors)
	}
	for _, e := range g.Edges {
		if e.Path != PathDirect {
			t.Errorf("edge %s: path %q, want direct", e.ID, e.Path)
		}
	}
	st := startFanoutHTTP(t, hs.URL, FanoutRequest{Kind: "ping"})
	if st.Total != 12 {
		t.Fatalf("total %d, want 12", st.Total)
	}
	results, done := readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events", nil)
	if len(results) != 12 || done.Completed != 12 || done.Failed != 0 || done.Canceled {
		t.Fatalf("got %d results, done %+v", len(results), done)
	}
	pairs := map[string]bool{}
	for _, r := range results {
		if !r.OK || r.Path != PathDirect || r.LatencyMS != 3 || r.PeerIP == "" || strings.Contains(r.PeerIP, ":") {
			t.Errorf("result %+v", r)
		}
		pairs[r.HostNode+">"+r.Peer] = true
	}
	if len(pairs) != 12 {
		t.Errorf("%d distinct pairs, want 12", len(pairs))
	}
	// A late reader gets everything again, one by one or in batches.
	again, _ := readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events", nil)
	if len(again) != 12 {
		t.Errorf("replay: %d results", len(again))
	}
	batched, _ := readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events?batch=1", nil)
	if len(batched) != 12 || batched[0].Seq != 1 || batched[11].Seq != 12 {
		t.Errorf("batched replay: %d results", len(batched))
	}
}

// TestFakePingPeersFallback mixes adapters with PingPeers and adapters
// from before it: every pair is pinged once, by a stream or by Ping.
func TestFakePingPeersFallback(t *testing.T) {
	addrs, fakes := fakeMesh(t, 4, func(i int, f *fakeAdapter) { f.noPingPeers = i%2 == 0 })
	_, hs := newTestServer(t, addrs, nil)
	st := startFanoutHTTP(t, hs.URL, FanoutRequest{Kind: "ping", Count: 2})
	results, done := readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events", nil)
	if st.Total != 12 || len(results) != 12 || done.Completed != 12 || done.Failed != 0 {
		t.Fatalf("total %d, %d results, done %+v", st.Total, len(results), done)
	}
	pairs := map[string]bool{}
	for _, r := range results {
		if !r.OK || r.Sent != 2 || r.Received != 1 || r.Path != PathDirect || r.PeerIP == "" || r.StartedAt == "" {
			t.Errorf("result %+v", r)
		}
		pairs[r.HostNode+">"+r.Peer] = true
	}
	if len(pairs) != 12 {
		t.Errorf("%d distinct pairs, want 12", len(pairs))
	}
	for i, f := range fakes {
		f.mu.Lock()
		if f.pings != 3 {
			t.Errorf("adapter %d (noPingPeers %v) made %d pings, want 3", i, f.noPingPeers, f.pings)
		}
		f.mu.Unlock()
	}
}

// TestFakePingPeersOldConcurrency mixes adapters that take 256 pings at
// once with adapters from before, which take 64 and refuse more: every
// pair is pinged once, each over a stream at what its adapter takes.
func TestFakePingPeersOldConcurrency(t *testing.T) {
	addrs, fakes := fakeMesh(t, 4, func(i int, f *fakeAdapter) {
		if i%2 == 0 {
			f.maxConc = oldStreamConcurrency
		}
	})
	_, hs := newTestServer(t, addrs, nil)
	st := startFanoutHTTP(t, hs.URL, FanoutRequest{Kind: "ping"})
	results, done := readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events", nil)
	if st.Total != 12 || len(results) != 12 || done.Completed != 12 || done.Failed != 0 {
		t.Fatalf("total %d, %d results, done %+v", st.Total, len(results), done)
	}
	for i, f := range fakes {
		f.mu.Lock()
		want := int32(streamConcurrency)
		if f.maxConc != 0 {
			want = f.maxConc
		}
		if f.pings != 3 || f.conc != want {
			t.Errorf("adapter %d (max %d at once) made %d pings at %d at once, want 3 at %d", i, f.maxConc, f.pings, f.conc, want)
		}
		f.mu.Unlock()
	}
}

// TestFakePingPeersStalled: a stream that sends nothing fails its peers
// with a deadline once one peer's pings should have ended.
func TestFakePingPeersStalled(t *testing.T) {
	addrs, fakes := fakeMesh(t, 3, func(i int, f *fakeAdapter) { f.block = i == 0 })
	_, hs := newTestServer(t, addrs, nil)
	st := startFanoutHTTP(t, hs.URL, FanoutRequest{Kind: "ping", TimeoutMS: 100})
	results, done := readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events", nil)
	if done.Completed != 6 || done.Failed != 2 {
		t.Fatalf("done %+v", done)
	}
	for _, r := range results {
		stuck := r.HostNode == fakes[0].self.Id
		if r.OK == stuck || stuck && (r.Code != "DeadlineExceeded" || !strings.Contains(r.Error, "did not answer in time")) {
			t.Errorf("result %+v (host stuck: %v)", r, stuck)
		}
	}
}

func TestFakeDNSFanout(t *testing.T) {
	addrs, _ := fakeMesh(t, 3, nil)
	_, hs := newTestServer(t, addrs, nil)
	st := startFanoutHTTP(t, hs.URL, FanoutRequest{Kind: "dns", DNSName: "node-01.tsymbiote.test"})
	results, done := readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events", nil)
	if st.Total != 3 || len(results) != 3 || done.Failed != 0 {
		t.Fatalf("total %d, %d results, done %+v", st.Total, len(results), done)
	}
	if results[0].Rcode != "NOERROR" || len(results[0].Answers) != 1 {
		t.Errorf("result %+v", results[0])
	}
	st = startFanoutHTTP(t, hs.URL, FanoutRequest{Kind: "dns", DNSName: "nx.example"})
	_, done = readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events", nil)
	if done.Failed != 3 {
		t.Errorf("NXDOMAIN: %d failed, want 3", done.Failed)
	}
}

func TestFakeCancel(t *testing.T) {
	addrs, _ := fakeMesh(t, 3, func(i int, f *fakeAdapter) { f.block = true })
	_, hs := newTestServer(t, addrs, nil)
	st := startFanoutHTTP(t, hs.URL, FanoutRequest{Kind: "ping", TimeoutMS: 30000})
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	res, err := post(hs.URL+"/api/fanouts/"+st.ID+"/cancel", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	results, done := readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events", nil)
	if !done.Canceled || !done.Done {
		t.Fatalf("done %+v", done)
	}
	for _, r := range results {
		if r.OK || r.Error != "canceled" {
			t.Errorf("result after cancel: %+v", r)
		}
	}
	t.Logf("cancel ended the fan-out in %v with %d of %d calls reported", time.Since(start), done.Completed, done.Total)
}

func TestFakeAdapterGoneMidFanout(t *testing.T) {
	addrs, fakes := fakeMesh(t, 3, func(i int, f *fakeAdapter) {
		f.delay = 50 * time.Millisecond
		if i == 1 {
			f.block = true
		}
	})
	_, hs := newTestServer(t, addrs, nil)
	st := startFanoutHTTP(t, hs.URL, FanoutRequest{Kind: "ping", TimeoutMS: 300, PerHost: 1})
	results, done := readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events", nil)
	if done.Total != 6 || done.Completed != 6 {
		t.Fatalf("done %+v", done)
	}
	for _, r := range results {
		bad := r.HostNode == fakes[1].self.Id
		if r.OK == bad {
			t.Errorf("result %+v: ok=%v, want %v", r, r.OK, !bad)
		}
	}
}

func TestFakeBadRequests(t *testing.T) {
	addrs, _ := fakeMesh(t, 2, nil)
	_, hs := newTestServer(t, addrs, nil)
	for _, body := range []string{
		`{"kind":"nope"}`,
		`{"kind":"ping","pingType":"udp"}`,
		`{"kind":"ping","count":100}`,
		`{"kind":"ping","hosts":["nope"]}`,
		`{"kind":"dns"}`,
		`{"kind":"dns","dnsName":"x","dnsType":"ANY"}`,
		`{"kind":"ping","timeoutMs":-1}`,
		`{"kind":"ping","extra":1}`,
		`not json`,
	} {
		res, err := post(hs.URL+"/api/fanouts", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]string
		_ = json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || e["error"] == "" {
			t.Errorf("%s: %d %v", body, res.StatusCode, e)
		}
	}
	if code := getJSON(t, hs.URL+"/api/fanouts/nope", nil); code != 404 {
		t.Errorf("unknown fan-out: %d", code)
	}
	if code := getJSON(t, hs.URL+"/api/details?host=x&what=prefs", nil); code != 404 {
		t.Errorf("unknown host: %d", code)
	}
}

func TestFakeDetailsAndLogs(t *testing.T) {
	addrs, _ := fakeMesh(t, 2, nil)
	_, hs := newTestServer(t, addrs, nil)
	var g Graph
	getJSON(t, hs.URL+"/api/graph", &g)
	h := g.Hosts[0].ID
	var prefs map[string]any
	if code := getJSON(t, hs.URL+"/api/details?what=prefs&host="+h, &prefs); code != 200 || prefs["wantRunning"] != true {
		t.Fatalf("prefs: %d %v", code, prefs)
	}
	var e map[string]string
	if code := getJSON(t, hs.URL+"/api/details?what=bogus&host="+h, &e); code != 400 {
		t.Errorf("bogus detail: %d %v", code, e)
	}
	if code := getJSON(t, hs.URL+"/api/details?what=netcheck&host="+h, &e); code != 502 || !strings.Contains(e["error"], "netcheck") {
		t.Errorf("unimplemented netcheck: %d %v", code, e)
	}
	res, err := http.Get(hs.URL + "/api/logs?host=" + h)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	var lines []string
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			lines = append(lines, sc.Text())
		}
	}
	if len(lines) != 4 || !strings.Contains(lines[3], "daemon went away") {
		t.Errorf("log events: %q", lines)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	addrs, _ := fakeMesh(t, 2, nil)
	_, hs := newTestServer(t, addrs, nil)
	var h map[string]any
	if code := getJSON(t, hs.URL+"/healthz", &h); code != 200 || h["adapters"] != float64(2) {
		t.Fatalf("healthz: %d %v", code, h)
	}
	st := startFanoutHTTP(t, hs.URL, FanoutRequest{Kind: "ping"})
	readEvents(t, hs.URL+"/api/fanouts/"+st.ID+"/events", nil)
	res, err := http.Get(hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	for _, want := range []string{
		`tsymbiote_webui_fanouts_total{kind="ping",outcome="completed"} 1`,
		// A ping all is one PingPeers stream per host.
		`tsymbiote_webui_adapter_calls_total{adapter="` + addrs[0] + `",method="PingPeers",outcome="OK"} 1`,
		`tsymbiote_webui_adapters 2`,
		`tsymbiote_webui_adapter_call_duration_seconds_bucket{method="Status"`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestRefreshWhileServing re-lists adapters while the graph and details
// read them (run with -race).
func TestRefreshWhileServing(t *testing.T) {
	addrs, _ := fakeMesh(t, 3, nil)
	s, hs := newTestServer(t, addrs, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			_ = s.reg.Refresh(ctx)
		}
	}()
	for ctx.Err() == nil {
		var g Graph
		getJSON(t, hs.URL+"/api/graph", &g)
		if len(g.Hosts) > 0 {
			getJSON(t, hs.URL+"/api/details?what=prefs&host="+urlq(g.Hosts[0].ID), nil)
		}
		getJSON(t, hs.URL+"/healthz", nil)
	}
}
