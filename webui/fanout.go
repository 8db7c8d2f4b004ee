package webui

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// Limits on a fan-out request. The calls go to different machines, so
// the defaults bound each host's adapter (perHost) and the WebUI's own
// goroutines and streams (concurrency), not the sum: a ping all over 250
// hosts is 62,250 calls, and at 64 in flight with round trips of about
// 100 ms it took 104 s where 16 per host take under 2 s.
const (
	maxConcurrency  = 8192
	maxPerHost      = 64
	maxCallTimeout  = 60 * time.Second
	maxPingCount    = 20
	maxFanoutCalls  = 100_000
	keepFanouts     = 16 // finished fan-outs kept for late readers
	defaultTimeout  = 5 * time.Second
	defaultConc     = 4096
	defaultPerHost  = 16
	defaultPingType = PingDisco
	// perAdapter bounds calls in flight to one adapter, whatever its
	// hosts: one adapter may serve a node's every pod (adapters take 256
	// streams at once), and 50 targets at 16 each made a real adapter
	// queue 800 pings until a third of them missed their deadline.
	perAdapter = 128
	// streamConcurrency is how many of a host's peers its PingPeers
	// stream pings at once (the adapter allows 1 to 256). The stream is
	// one call of the bounds above. A host's slowest peers set how long
	// a ping all takes: in the 250-host benchmark the farthest host's
	// 249 round trips sum to 100 s, so the API alone took 7.9 s at 16 at
	// once and 4.1-4.7 s at 64; at 256 every peer is pinged at once and
	// the slowest round trip sets the pace.
	streamConcurrency = 256
	// oldStreamConcurrency is the most adapters from before 256 take:
	// they refuse more with InvalidArgument, and the stream is asked
	// again at this.
	oldStreamConcurrency = 64
)

var pingTypes = map[PingType]adapterv1.PingType{
	PingDisco:   adapterv1.PingType_PING_TYPE_DISCO,
	PingTSMP:    adapterv1.PingType_PING_TYPE_TSMP,
	PingICMP:    adapterv1.PingType_PING_TYPE_ICMP,
	PingPeerAPI: adapterv1.PingType_PING_TYPE_PEERAPI,
}

var dnsTypes = []DNSType{DNSTypeA, DNSTypeAAAA, DNSTypeCNAME, DNSTypeMX, DNSTypeNS, DNSTypePTR, DNSTypeSOA, DNSTypeSRV, DNSTypeTXT}

// normalize fills defaults and checks r, naming the field at fault.
func (r *FanoutRequest) normalize() error {
	switch r.Kind {
	case FanoutPing:
		if r.PingType == "" {
			r.PingType = defaultPingType
		}
		r.PingType = PingType(strings.ToLower(string(r.PingType)))
		if _, ok := pingTypes[r.PingType]; !ok {
			return fmt.Errorf("pingType %q: want disco, tsmp, icmp or peerapi", r.PingType)
		}
		if r.Count == 0 {
			r.Count = 1
		}
		if r.Count < 1 || r.Count > maxPingCount {
			return fmt.Errorf("count %d: want 1 to %d", r.Count, maxPingCount)
		}
	case FanoutDNS:
		r.DNSName = strings.TrimSpace(r.DNSName)
		if r.DNSName == "" || len(r.DNSName) > 253 || strings.ContainsAny(r.DNSName, " \t/") {
			return fmt.Errorf("dnsName %q: want a DNS name", r.DNSName)
		}
		if r.DNSType == "" {
			r.DNSType = DNSTypeA
		}
		r.DNSType = DNSType(strings.ToUpper(string(r.DNSType)))
		if !contains(dnsTypes, r.DNSType) {
			return fmt.Errorf("dnsType %q: want one of %v", r.DNSType, dnsTypes)
		}
	default:
		return fmt.Errorf("kind %q: want ping or dns", r.Kind)
	}
	if r.TimeoutMS == 0 {
		r.TimeoutMS = int(defaultTimeout / time.Millisecond)
	}
	if r.TimeoutMS < 1 || time.Duration(r.TimeoutMS)*time.Millisecond > maxCallTimeout {
		return fmt.Errorf("timeoutMs %d: want 1 to %d", r.TimeoutMS, maxCallTimeout/time.Millisecond)
	}
	if r.Concurrency == 0 {
		r.Concurrency = defaultConc
	}
	if r.Concurrency < 1 || r.Concurrency > maxConcurrency {
		return fmt.Errorf("concurrency %d: want 1 to %d", r.Concurrency, maxConcurrency)
	}
	if r.PerHost == 0 {
		r.PerHost = defaultPerHost
	}
	if r.PerHost < 1 || r.PerHost > maxPerHost {
		return fmt.Errorf("perHost %d: want 1 to %d", r.PerHost, maxPerHost)
	}
	return nil
}

func contains[T comparable](xs []T, x T) bool { return slices.Contains(xs, x) }

// call is one planned call.
type call struct {
	host     HostState
	peer     *adapterv1.Node
	peerAddr string
}

// Fanout is a running or finished fan-out.
type Fanout struct {
	ID      string        `json:"id"`
	Request FanoutRequest `json:"request"`
	Total   int           `json:"total"`
	Hosts   int           `json:"hosts"` // hosts calling
	Started time.Time     `json:"started"`

	cancel context.CancelFunc

	mu       sync.Mutex
	results  []Result
	done     bool
	canceled bool
	finished time.Time
	changed  chan struct{} // closed and replaced on every change
}

// planFanout lists the calls req makes from hosts.
func planFanout(req *FanoutRequest, hosts []HostState) ([]call, error) {
	var calls []call
	for _, h := range hosts {
		if req.Kind == FanoutDNS {
			calls = append(calls, call{host: h})
			continue
		}
		if h.Status == nil {
			// A host whose status failed still counts: its call reports
			// the failure where it happened.
			calls = append(calls, call{host: h})
			continue
		}
		for _, p := range h.Status.GetPeers() {
			if len(req.Peers) > 0 && !contains(req.Peers, p.GetId()) {
				continue
			}
			if !p.GetOnline() && !req.IncludeOffline {
				continue
			}
			addr := pickAddr(p.GetTailscaleIps())
			if addr == "" {
				continue
			}
			calls = append(calls, call{host: h, peer: p, peerAddr: addr})
		}
	}
	if len(calls) > maxFanoutCalls {
		return nil, fmt.Errorf("fan-out of %d calls is over the limit of %d; select fewer hosts", len(calls), maxFanoutCalls)
	}
	return calls, nil
}

// pickAddr prefers a peer's IPv4 address.
func pickAddr(ips []string) string {
	var v6 string
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if a.Is4() {
			return s
		}
		if v6 == "" {
			v6 = s
		}
	}
	return v6
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// run makes the calls with bounded concurrency, appending results as they
// arrive. It returns when every call has finished or ctx ended.
func (f *Fanout) run(ctx context.Context, calls []call, m *metrics) {
	global := make(chan struct{}, f.Request.Concurrency)
	byHost := map[string][]call{}
	byAdapter := map[string]chan struct{}{}
	var order []string
	for _, c := range calls {
		if _, ok := byHost[c.host.ID]; !ok {
			order = append(order, c.host.ID)
		}
		byHost[c.host.ID] = append(byHost[c.host.ID], c)
		if byAdapter[c.host.AdapterID] == nil {
			byAdapter[c.host.AdapterID] = make(chan struct{}, perAdapter)
		}
	}
	var wg sync.WaitGroup
	for _, id := range order {
		hostCalls := byHost[id]
		perHost := make(chan struct{}, f.Request.PerHost)
		adapter := byAdapter[hostCalls[0].host.AdapterID]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if streamable(hostCalls) {
				// One PingPeers stream for all the host's peers takes
				// one slot of each bound: the adapter bounds the pings
				// within it. An adapter without PingPeers hands the
				// calls back, to be made one by one below.
				if !acquire(ctx, perHost, adapter, global) {
					return
				}
				hostCalls = f.pingStream(ctx, hostCalls, streamConcurrency)
				<-global
				<-adapter
				<-perHost
			}
			var hwg sync.WaitGroup
			defer hwg.Wait()
			for _, c := range hostCalls {
				select {
				case perHost <- struct{}{}:
				case <-ctx.Done():
					return
				}
				// Always host, adapter, then global: the same order
				// everywhere, so no two goroutines wait on each other.
				select {
				case adapter <- struct{}{}:
				case <-ctx.Done():
					<-perHost
					return
				}
				select {
				case global <- struct{}{}:
				case <-ctx.Done():
					<-adapter
					<-perHost
					return
				}
				hwg.Add(1)
				go func() {
					defer hwg.Done()
					defer func() { <-global; <-adapter; <-perHost }()
					f.add(f.do(ctx, c, m))
				}()
			}
		}()
	}
	wg.Wait()
	f.mu.Lock()
	f.done = true
	f.canceled = ctx.Err() != nil
	f.finished = time.Now()
	f.notifyLocked()
	f.mu.Unlock()
	if m != nil {
		outcome := "completed"
		if f.canceled {
			outcome = "canceled"
		}
		m.fanouts.WithLabelValues(string(f.Request.Kind), outcome).Inc()
		m.fanoutSeconds.WithLabelValues(string(f.Request.Kind)).Observe(time.Since(f.Started).Seconds())
	}
}

// acquire takes a slot of each of sems, in order, or none when ctx ends
// first.
func acquire(ctx context.Context, sems ...chan struct{}) bool {
	for i, sem := range sems {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			for _, held := range sems[:i] {
				<-held
			}
			return false
		}
	}
	return true
}

// streamable reports whether calls, all from one host, can go over one
// PingPeers stream: pings to peers, from a host whose status answered.
func streamable(calls []call) bool {
	for _, c := range calls {
		if c.peer == nil || c.host.Err != nil || c.host.client == nil {
			return false
		}
	}
	return len(calls) > 0
}

// pingStream pings calls, all from one host, over one PingPeers stream,
// adding each peer's result as the adapter sends it. It returns the calls
// still to make: all of them when the adapter predates PingPeers
// (Unimplemented before any answer), none otherwise; peers the stream did
// not answer get its error as their result. conc is how many peers the
// adapter pings at once.
func (f *Fanout) pingStream(ctx context.Context, calls []call, conc int) []call {
	req := &f.Request
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	h := calls[0].host
	peers := make([]string, len(calls))
	for i, c := range calls {
		peers[i] = c.peerAddr
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The adapter bounds each peer's pings by timeout each; a stream
	// silent for longer than one peer's pings plus a second is stuck,
	// as a unary Ping would be past its deadline.
	idle := timeout*time.Duration(req.Count) + time.Second
	var stalled atomic.Bool
	timer := time.AfterFunc(idle, func() { stalled.Store(true); cancel() })
	defer timer.Stop()
	start := time.Now()
	s, err := h.client.PingPeers(sctx, &adapterv1.PingPeersRequest{
		Target: h.Target, Peers: peers, Type: pingTypes[req.PingType],
		Count: int32(req.Count), Timeout: durationpb.New(timeout), Concurrency: int32(conc),
	})
	answered := make([]bool, len(calls))
	n := 0
	for err == nil {
		var m *adapterv1.PingPeersResponse
		if m, err = s.Recv(); err != nil {
			break
		}
		timer.Reset(idle)
		i := int(m.GetIndex())
		if i < 0 || i >= len(calls) || answered[i] {
			err = status.Errorf(codes.Internal, "adapter answered for peer index %d of %d twice or out of range", i, len(calls))
			break
		}
		answered[i] = true
		n++
		r := f.pingBase(calls[i])
		took := time.Since(start)
		if m.GetTook() != nil {
			took = m.GetTook().AsDuration()
		}
		r.StartedAt = time.Now().Add(-took).UTC().Format(time.RFC3339Nano)
		r.Millis = float64(took.Microseconds()) / 1000
		fillPing(&r, m.GetPing())
		f.add(r)
	}
	if n == 0 && status.Code(err) == codes.Unimplemented {
		return calls
	}
	if n == 0 && status.Code(err) == codes.InvalidArgument && conc > oldStreamConcurrency && ctx.Err() == nil {
		// An adapter from before 256 at once refuses the request whole.
		timer.Stop()
		return f.pingStream(ctx, calls, oldStreamConcurrency)
	}
	if errors.Is(err, io.EOF) && n < len(calls) {
		err = status.Errorf(codes.Internal, "adapter ended the stream after %d of %d peers", n, len(calls))
	}
	if n == len(calls) {
		return nil
	}
	msg, code := callError(ctx, err), status.Code(err).String()
	if stalled.Load() && ctx.Err() == nil {
		msg, code = "deadline exceeded: the adapter did not answer in time", codes.DeadlineExceeded.String()
	}
	took := float64(time.Since(start).Microseconds()) / 1000
	for i, c := range calls {
		if !answered[i] {
			r := f.pingBase(c)
			r.Error, r.Code, r.Millis = msg, code, took
			f.add(r)
		}
	}
	return nil
}

func (f *Fanout) add(r Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.Seq = len(f.results) + 1
	f.results = append(f.results, r)
	f.notifyLocked()
}

func (f *Fanout) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// do makes one call under the request's deadline.
func (f *Fanout) do(ctx context.Context, c call, _ *metrics) (r Result) {
	req := &f.Request
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	r = f.base(c)
	start := time.Now()
	defer func() { r.Millis = float64(time.Since(start).Microseconds()) / 1000 }()
	if c.host.Err != nil && req.Kind == FanoutPing {
		r.Error, r.Code = "host status: "+c.host.Err.Error(), status.Code(c.host.Err).String()
		return r
	}
	switch req.Kind {
	case FanoutPing:
		r = f.pingBase(c)
		// The deadline covers every ping of the call plus the adapter's
		// own overhead; each ping gets the whole budget as its timeout so
		// that one slow answer still counts.
		cctx, cancel := context.WithTimeout(ctx, timeout*time.Duration(req.Count)+time.Second)
		defer cancel()
		res, err := c.host.client.Ping(cctx, &adapterv1.PingRequest{
			Target: c.host.Target, Peer: c.peerAddr, Type: pingTypes[req.PingType],
			Count: int32(req.Count), Timeout: durationpb.New(timeout),
		})
		if err != nil {
			r.Error, r.Code = callError(ctx, err), status.Code(err).String()
			return r
		}
		fillPing(&r, res)
	case FanoutDNS:
		r.DNSName = req.DNSName
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		res, err := c.host.client.QueryDNS(cctx, &adapterv1.QueryDNSRequest{Target: c.host.Target, Name: req.DNSName, Type: string(req.DNSType)})
		if err != nil {
			r.Error, r.Code = callError(ctx, err), status.Code(err).String()
			return r
		}
		r.Rcode = res.GetRcode()
		for _, a := range res.GetAnswers() {
			r.Answers = append(r.Answers, a.GetType()+" "+a.GetData())
		}
		r.OK = res.GetRcode() == "NOERROR"
		if !r.OK {
			r.Error = "rcode " + res.GetRcode()
		}
	}
	return r
}

// base is c's result before the call: who calls, from where.
func (f *Fanout) base(c call) Result {
	r := Result{Kind: f.Request.Kind, Host: c.host.ID, Adapter: c.host.Adapter, HostName: c.host.Target, StartedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	if st := c.host.Status; st != nil && st.GetSelf() != nil {
		r.HostNode, r.HostName = st.GetSelf().GetId(), st.GetSelf().GetHostname()
	}
	return r
}

// pingBase is base with the pinged peer.
func (f *Fanout) pingBase(c call) Result {
	r := f.base(c)
	r.Peer, r.PeerName, r.PeerIP, r.PingType, r.Sent = c.peer.GetId(), c.peer.GetHostname(), c.peerAddr, f.Request.PingType, f.Request.Count
	return r
}

// callError says why a call failed, telling a cancelled fan-out from an
// adapter that did not answer in time.
func callError(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return "canceled"
	}
	if s, ok := status.FromError(err); ok {
		if s.Code() == codes.DeadlineExceeded {
			return "deadline exceeded: the adapter did not answer in time"
		}
		return s.Message()
	}
	return err.Error()
}

func fillPing(r *Result, res *adapterv1.PingResponse) {
	r.Received = int(res.GetSucceeded())
	if res.GetSucceeded() == 0 {
		for _, pr := range res.GetResults() {
			if pr.GetError() != "" {
				r.Error = pr.GetError()
				break
			}
		}
		if r.Error == "" {
			r.Error = "no answer"
		}
		return
	}
	r.OK = true
	r.LatencyMS = float64(res.GetAvgLatency().AsDuration().Microseconds()) / 1000
	// The last successful ping's path is the one traffic settled on.
	for i := len(res.GetResults()) - 1; i >= 0; i-- {
		pr := res.GetResults()[i]
		if pr.GetError() != "" {
			continue
		}
		r.Path = pathName(pr.GetPath())
		r.Endpoint = pr.GetEndpoint()
		r.DERPRegion = pr.GetDerpRegionCode()
		r.PeerRelay = pr.GetPeerRelay()
		break
	}
}

func pathName(k adapterv1.PathKind) PathKind {
	switch k {
	case adapterv1.PathKind_PATH_KIND_DIRECT:
		return PathDirect
	case adapterv1.PathKind_PATH_KIND_DERP:
		return PathDERP
	case adapterv1.PathKind_PATH_KIND_PEER_RELAY:
		return PathPeerRelay
	case adapterv1.PathKind_PATH_KIND_LOCAL:
		return PathLocal
	}
	return ""
}

// State returns the fan-out as JSON, with results from index from on.
func (f *Fanout) State(withResults bool) FanoutState {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := FanoutState{ID: f.ID, Request: f.Request, Total: f.Total, Completed: len(f.results), Done: f.done, Canceled: f.canceled, Started: f.Started}
	for _, r := range f.results {
		if !r.OK {
			s.Failed++
		}
	}
	end := time.Now()
	if f.done {
		end = f.finished
	}
	s.ElapsedMS = float64(end.Sub(f.Started).Microseconds()) / 1000
	if withResults {
		s.Results = append([]Result(nil), f.results...)
	}
	return s
}

// since returns the results from index i on, whether the fan-out is done,
// and a channel closed at the next change.
func (f *Fanout) since(i int) ([]Result, bool, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var rs []Result
	if i < len(f.results) {
		rs = append(rs, f.results[i:]...)
	}
	return rs, f.done, f.changed
}

// Cancel stops the fan-out; calls in flight end as canceled.
func (f *Fanout) Cancel() { f.cancel() }

// fanouts keeps the running fan-outs and the last finished ones.
type fanouts struct {
	mu    sync.Mutex
	byID  map[string]*Fanout
	order []string
}

func newFanouts() *fanouts { return &fanouts{byID: map[string]*Fanout{}} }

func (fs *fanouts) add(f *Fanout) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.byID[f.ID] = f
	fs.order = append(fs.order, f.ID)
	// Forget the oldest finished ones beyond keepFanouts.
	for len(fs.order) > keepFanouts {
		old := fs.byID[fs.order[0]]
		old.mu.Lock()
		done := old.done
		old.mu.Unlock()
		if !done {
			break
		}
		delete(fs.byID, fs.order[0])
		fs.order = fs.order[1:]
	}
}

func (fs *fanouts) get(id string) *Fanout {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.byID[id]
}

func (fs *fanouts) cancelAll() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, f := range fs.byID {
		f.cancel()
	}
}

// startFanout plans and starts a fan-out in the background. The fan-out
// outlives the HTTP request that started it; base bounds its life.
func startFanout(base context.Context, req FanoutRequest, hosts []HostState, m *metrics) (*Fanout, error) {
	if err := req.normalize(); err != nil {
		return nil, err
	}
	sel, err := hostsByID(hosts, req.Hosts)
	if err != nil {
		return nil, err
	}
	if len(sel) == 0 {
		return nil, errors.New("hosts: no adapters answered; nothing to call from")
	}
	calls, err := planFanout(&req, sel)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(base)
	f := &Fanout{ID: newID(), Request: req, Total: len(calls), Hosts: len(sel), Started: time.Now(), cancel: cancel, changed: make(chan struct{})}
	// Every call adds one result: growing the slice by doubling copied
	// about 100 MB in a 62,250-call fan-out.
	f.results = make([]Result, 0, len(calls))
	go func() {
		defer cancel()
		f.run(ctx, calls, m)
	}()
	return f, nil
}
