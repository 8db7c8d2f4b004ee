package adapter

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/netip"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"tailscale.com/client/local"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/net/netcheck"
	"tailscale.com/net/netmon"
	"tailscale.com/tailcfg"
	"tailscale.com/types/dnstype"
	"tailscale.com/types/logger"
	"tailscale.com/util/eventbus"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// daemon is the part of tailscaled's LocalAPI the adapter uses. It holds
// only questions: nothing reachable through it changes the daemon's prefs,
// state or netmap, which is what makes the service read-only by
// construction. (Ping is a POST in the LocalAPI but only sends probes.)
type daemon interface {
	Status(context.Context) (*ipnstate.Status, error)
	StatusWithoutPeers(context.Context) (*ipnstate.Status, error)
	PingWithOpts(context.Context, netip.Addr, tailcfg.PingType, local.PingOpts) (*ipnstate.PingResult, error)
	QueryDNS(ctx context.Context, name, queryType string) ([]byte, []*dnstype.Resolver, error)
	GetPrefs(context.Context) (*ipn.Prefs, error)
	DNSConfig(context.Context) (*tailcfg.DNSConfig, error)
	GetDNSOSConfig(context.Context) (*apitype.DNSOSConfig, error)
	GetServeConfig(context.Context) (*ipn.ServeConfig, error)
	WhoIs(ctx context.Context, remoteAddr string) (*apitype.WhoIsResponse, error)
	CurrentDERPMap(context.Context) (*tailcfg.DERPMap, error)
	TailDaemonLogs(context.Context) (io.Reader, error)
	StreamBusEvents(context.Context) iter.Seq2[eventbus.DebugEvent, error]
	// WatchIPNBus is only ever opened for the initial netmap, and closed.
	WatchIPNBus(context.Context, ipn.NotifyWatchOpt) (*local.IPNBusWatcher, error)
}

var _ daemon = (*local.Client)(nil)

// Request limits. Requests beyond them get InvalidArgument naming the field.
const (
	maxFieldLen     = 256
	maxPingCount    = 20
	defaultPingWait = 5 * time.Second
	maxPingWait     = 30 * time.Second
	callTimeout     = 30 * time.Second
)

// Service implements adapterv1.AdapterServiceServer over Targets.
type Service struct {
	adapterv1.UnimplementedAdapterServiceServer

	logf    logger.Logf
	targets *Targets
	daemon  func(Target) daemon // targets.Client; tests substitute fakes

	// netcheckMu serializes Netcheck: each one binds sockets and probes
	// every DERP region, and concurrent runs would skew each other.
	netcheckMu sync.Mutex
}

// NewService returns a Service answering for targets.
func NewService(logf logger.Logf, targets *Targets) *Service {
	return &Service{logf: logf, targets: targets, daemon: func(tg Target) daemon { return targets.Client(tg) }}
}

func checkLen(field, v string) error {
	if len(v) > maxFieldLen {
		return invalidArg("%s is %d bytes; at most %d allowed", field, len(v), maxFieldLen)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return invalidArg("%s contains control characters", field)
	}
	return nil
}

// target resolves a request's target and its LocalAPI client.
func (s *Service) target(name string) (Target, daemon, error) {
	if err := checkLen("target", name); err != nil {
		return Target{}, nil, err
	}
	tg, err := s.targets.Resolve(name)
	switch {
	case errors.Is(err, errUnknownTarget):
		return Target{}, nil, status.Error(codes.NotFound, err.Error())
	case err != nil:
		return Target{}, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return tg, s.daemon(tg), nil
}

func (s *Service) ListTargets(ctx context.Context, _ *adapterv1.ListTargetsRequest) (*adapterv1.ListTargetsResponse, error) {
	r := &adapterv1.ListTargetsResponse{}
	if d, ok := s.targets.Default(); ok {
		r.DefaultTarget = d.Name
	}
	for _, tg := range s.targets.List() {
		t := &adapterv1.Target{Name: tg.Name, Socket: tg.Socket}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := s.targets.ReachableError(cctx, tg); err != nil {
			t.Error = err.Error()
		} else {
			t.Reachable = true
		}
		cancel()
		r.Targets = append(r.Targets, t)
	}
	return r, nil
}

func (s *Service) Status(ctx context.Context, req *adapterv1.StatusRequest) (*adapterv1.StatusResponse, error) {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	st, err := d.Status(ctx)
	if err != nil {
		return nil, daemonError(tg, "status", err)
	}
	return statusResponse(tg.Name, st), nil
}

var pingTypes = map[adapterv1.PingType]tailcfg.PingType{
	adapterv1.PingType_PING_TYPE_DISCO:   tailcfg.PingDisco,
	adapterv1.PingType_PING_TYPE_TSMP:    tailcfg.PingTSMP,
	adapterv1.PingType_PING_TYPE_ICMP:    tailcfg.PingICMP,
	adapterv1.PingType_PING_TYPE_PEERAPI: tailcfg.PingPeerAPI,
}

// findPeer resolves a Ping or WhoIs peer reference against status: a
// tailnet IP, a hostname, a MagicDNS name (full or first label) or a stable
// node ID.
func findPeer(st *ipnstate.Status, ref string) (netip.Addr, *ipnstate.PeerStatus, error) {
	if ip, err := netip.ParseAddr(ref); err == nil {
		for _, p := range st.Peer {
			for _, a := range p.TailscaleIPs {
				if a == ip {
					return ip, p, nil
				}
			}
		}
		// An address behind a subnet router has no peer of its own; the
		// daemon decides whether it can ping it.
		return ip, nil, nil
	}
	want := strings.TrimSuffix(strings.ToLower(ref), ".")
	var matches []*ipnstate.PeerStatus
	for _, p := range st.Peer {
		dns := strings.TrimSuffix(strings.ToLower(p.DNSName), ".")
		label, _, _ := strings.Cut(dns, ".")
		if string(p.ID) == ref || strings.EqualFold(p.HostName, want) || dns == want || label == want {
			matches = append(matches, p)
		}
	}
	switch {
	case len(matches) == 0:
		return netip.Addr{}, nil, status.Errorf(codes.NotFound, "peer %q: no peer with that IP, hostname, MagicDNS name or node ID", ref)
	case len(matches) > 1:
		var ids []string
		for _, m := range matches {
			ids = append(ids, string(m.ID))
		}
		return netip.Addr{}, nil, invalidArg("peer %q is ambiguous (%d peers: %s); use an IP or node ID", ref, len(matches), strings.Join(ids, ", "))
	}
	p := matches[0]
	if len(p.TailscaleIPs) == 0 {
		return netip.Addr{}, nil, status.Errorf(codes.FailedPrecondition, "peer %q has no tailnet address", ref)
	}
	return p.TailscaleIPs[0], p, nil
}

func (s *Service) Ping(ctx context.Context, req *adapterv1.PingRequest) (*adapterv1.PingResponse, error) {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	if err := checkLen("peer", req.GetPeer()); err != nil {
		return nil, err
	}
	if req.GetPeer() == "" {
		return nil, invalidArg("peer is required: a tailnet IP, hostname, MagicDNS name or node ID")
	}
	pt, count, wait, err := pingParams(req.GetType(), req.GetCount(), req.GetTimeout())
	if err != nil {
		return nil, err
	}

	// An IP needs no lookup, which keeps a disco ping to one LocalAPI call.
	ip, err := netip.ParseAddr(req.GetPeer())
	if err != nil {
		st, err := d.Status(ctx)
		if err != nil {
			return nil, daemonError(tg, "status", err)
		}
		if ip, _, err = findPeer(st, req.GetPeer()); err != nil {
			return nil, err
		}
	}
	return s.ping(ctx, tg, d, ip, pt, count, wait)
}

// pingParams checks a ping request's type, count and timeout, filling the
// defaults; Ping and PingPeers share them.
func pingParams(typ adapterv1.PingType, n int32, timeout *durationpb.Duration) (pt tailcfg.PingType, count int, wait time.Duration, err error) {
	pt, ok := pingTypes[typ]
	if !ok {
		return "", 0, 0, invalidArg("type %v is not a ping type; use one of PING_TYPE_DISCO, PING_TYPE_TSMP, PING_TYPE_ICMP, PING_TYPE_PEERAPI", typ)
	}
	count = int(n)
	if count == 0 {
		count = 1
	}
	if count < 0 || count > maxPingCount {
		return "", 0, 0, invalidArg("count is %d; it must be between 1 and %d", count, maxPingCount)
	}
	wait = defaultPingWait
	if timeout != nil {
		if err := timeout.CheckValid(); err != nil {
			return "", 0, 0, invalidArg("timeout: %v", err)
		}
		wait = timeout.AsDuration()
		if wait <= 0 || wait > maxPingWait {
			return "", 0, 0, invalidArg("timeout is %v; it must be positive and at most %v", wait, maxPingWait)
		}
	}
	return pt, count, wait, nil
}

// ping pings ip count times, one after another, each under wait. Only a
// cancelled ctx or a daemon that cannot be reached fails the whole call;
// a ping without an answer is a result with its error.
func (s *Service) ping(ctx context.Context, tg Target, d daemon, ip netip.Addr, pt tailcfg.PingType, count int, wait time.Duration) (*adapterv1.PingResponse, error) {
	resp := &adapterv1.PingResponse{Target: tg.Name, Ip: ip.String()}
	var sum, lo, hi time.Duration
	for i := 1; i <= count; i++ {
		pctx, cancel := context.WithTimeout(ctx, wait)
		pr, err := d.PingWithOpts(pctx, ip, pt, local.PingOpts{})
		timedOut := errors.Is(pctx.Err(), context.DeadlineExceeded)
		cancel()
		var r *adapterv1.PingResult
		switch {
		case ctx.Err() != nil:
			return nil, status.FromContextError(ctx.Err()).Err()
		case err != nil && timedOut:
			r = &adapterv1.PingResult{Seq: int32(i), Error: fmt.Sprintf("no reply within %v", wait)}
		case err != nil && isTransportError(err):
			return nil, daemonError(tg, "ping", err)
		case err != nil:
			r = &adapterv1.PingResult{Seq: int32(i), Error: err.Error()}
		default:
			r = pingResult(i, pr)
		}
		if r.Error == "" && r.Latency != nil {
			l := r.Latency.AsDuration()
			sum += l
			if resp.Succeeded == 0 || l < lo {
				lo = l
			}
			hi = max(hi, l)
			resp.Succeeded++
		}
		resp.Results = append(resp.Results, r)
	}
	if resp.Succeeded > 0 {
		resp.MinLatency, resp.MaxLatency = dur(lo), dur(hi)
		resp.AvgLatency = dur(sum / time.Duration(resp.Succeeded))
	}
	if pt != tailcfg.PingDisco && resp.Succeeded > 0 {
		s.fillPaths(ctx, d, resp, ip)
	}
	return resp, nil
}

// fillPaths reads the peer's path from status for ping types that do not
// report it. A failure here leaves the paths unspecified rather than failing
// pings that worked.
func (s *Service) fillPaths(ctx context.Context, d daemon, resp *adapterv1.PingResponse, ip netip.Addr) {
	st, err := d.Status(ctx)
	if err != nil {
		return
	}
	_, now, _ := findPeer(st, ip.String())
	if now == nil {
		return
	}
	var dm *tailcfg.DERPMap
	if now.CurAddr == "" && now.PeerRelay == "" {
		dm, _ = d.CurrentDERPMap(ctx)
	}
	for _, r := range resp.Results {
		fillPathFromStatus(r, now, dm)
	}
}

// isLabelRune reports whether r may appear in a DNS name's label as queried
// (letters, digits, '-', and '_' for SRV-style names).
func isLabelRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

// validDNSName checks a query name: a sequence of labels of letters,
// digits, '-' and '_' (SRV), at most 63 bytes each and 253 in all.
func validDNSName(name string) error {
	n := strings.TrimSuffix(name, ".")
	if n == "" {
		return invalidArg("name is required")
	}
	if len(n) > 253 {
		return invalidArg("name is %d bytes; a DNS name has at most 253", len(n))
	}
	for _, l := range strings.Split(n, ".") {
		if l == "" || len(l) > 63 {
			return invalidArg("name %q has an empty or over-long (>63 bytes) label", name)
		}
		for _, r := range l {
			if !isLabelRune(r) {
				return invalidArg("name %q contains %q; only letters, digits, '-', '_' and '.' are allowed", name, r)
			}
		}
	}
	return nil
}

func (s *Service) QueryDNS(ctx context.Context, req *adapterv1.QueryDNSRequest) (*adapterv1.QueryDNSResponse, error) {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	name := req.GetName()
	if err := validDNSName(name); err != nil {
		return nil, err
	}
	qt := strings.ToUpper(strings.TrimSpace(req.GetType()))
	if qt == "" {
		qt = "A"
	}
	if _, ok := dnsTypes[qt]; !ok {
		return nil, invalidArg("type %q is not supported; use one of %s", req.GetType(), dnsTypeNames())
	}
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	raw, rs, err := d.QueryDNS(ctx, name, qt)
	if err != nil {
		return nil, daemonError(tg, "DNS query", err)
	}
	rcode, answers, err := parseDNSResponse(raw)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "target %q: %v", tg.Name, err)
	}
	return &adapterv1.QueryDNSResponse{Target: tg.Name, Rcode: rcode, Answers: answers, Resolvers: resolvers(rs), Raw: raw}, nil
}

func (s *Service) Prefs(ctx context.Context, req *adapterv1.PrefsRequest) (*adapterv1.PrefsResponse, error) {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	p, err := d.GetPrefs(ctx)
	if err != nil {
		return nil, daemonError(tg, "prefs", err)
	}
	return prefsResponse(tg.Name, p), nil
}

func (s *Service) DNSConfig(ctx context.Context, req *adapterv1.DNSConfigRequest) (*adapterv1.DNSConfigResponse, error) {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c, err := d.DNSConfig(ctx)
	if err != nil {
		return nil, daemonError(tg, "DNS config", err)
	}
	p, err := d.GetPrefs(ctx)
	if err != nil {
		return nil, daemonError(tg, "prefs", err)
	}
	osc, osErr := d.GetDNSOSConfig(ctx)
	if osErr != nil && isTransportError(osErr) {
		return nil, daemonError(tg, "OS DNS config", osErr)
	}
	return dnsConfigResponse(tg.Name, c, p.CorpDNS, osc, osErr), nil
}

func (s *Service) ServeConfig(ctx context.Context, req *adapterv1.ServeConfigRequest) (*adapterv1.ServeConfigResponse, error) {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c, err := d.GetServeConfig(ctx)
	if err != nil {
		return nil, daemonError(tg, "serve config", err)
	}
	r, err := serveConfigResponse(tg.Name, c)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "target %q: encoding serve config: %v", tg.Name, err)
	}
	return r, nil
}

func (s *Service) Netcheck(ctx context.Context, req *adapterv1.NetcheckRequest) (*adapterv1.NetcheckResponse, error) {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if tg.PodDir {
		r, err := ReportedNetcheck(ctx, d, tg.Name)
		switch {
		case errors.Is(err, errNoReport):
			return nil, status.Errorf(codes.FailedPrecondition, "target %q: %v", tg.Name, err)
		case err != nil:
			return nil, daemonError(tg, "netcheck report", err)
		}
		return r, nil
	}
	dm, err := d.CurrentDERPMap(ctx)
	if err != nil {
		return nil, daemonError(tg, "DERP map", err)
	}
	if dm == nil || len(dm.Regions) == 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "target %q has no DERP map yet (not logged in?)", tg.Name)
	}
	s.netcheckMu.Lock()
	defer s.netcheckMu.Unlock()
	t0 := time.Now()
	rep, err := runNetcheck(ctx, dm)
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Errorf(codes.Internal, "target %q: netcheck: %v", tg.Name, err)
	}
	r := netcheckResponse(tg.Name, rep, dm, time.Since(t0))
	r.Source = adapterv1.NetcheckSource_NETCHECK_SOURCE_ADAPTER
	// Who the figures stand for; a failure here leaves it out rather than
	// failing a netcheck that worked.
	if st, err := d.StatusWithoutPeers(ctx); err == nil {
		r.Self = nodeFromPeer(st.Self, st.User)
	}
	return r, nil
}

// runNetcheck does what `tailscale netcheck` does: a standalone report
// against the daemon's DERP map, with no port mapper (whose probes of the
// gateway would reach beyond what was asked).
func runNetcheck(ctx context.Context, dm *tailcfg.DERPMap) (*netcheck.Report, error) {
	bus := eventbus.New()
	defer bus.Close()
	nm, err := netmon.New(bus, logger.Discard)
	if err != nil {
		return nil, fmt.Errorf("network monitor: %w", err)
	}
	defer nm.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // closes the standalone sockets
	c := &netcheck.Client{NetMon: nm, Logf: logger.Discard}
	if err := c.Standalone(ctx, ""); err != nil {
		return nil, fmt.Errorf("binding UDP: %w", err)
	}
	return c.GetReport(ctx, dm, nil)
}

func (s *Service) WhoIs(ctx context.Context, req *adapterv1.WhoIsRequest) (*adapterv1.WhoIsResponse, error) {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	addr := strings.TrimSpace(req.GetAddress())
	if err := checkLen("address", addr); err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(addr); err != nil {
		if _, err2 := netip.ParseAddrPort(addr); err2 != nil {
			return nil, invalidArg("address %q is not an IP or ip:port", addr)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	w, err := d.WhoIs(ctx, addr)
	if errors.Is(err, local.ErrPeerNotFound) {
		return nil, status.Errorf(codes.NotFound, "target %q: no node owns %s", tg.Name, addr)
	}
	if err != nil {
		return nil, daemonError(tg, "whois", err)
	}
	return whoIsResponse(tg.Name, w), nil
}

func (s *Service) DERPMap(ctx context.Context, req *adapterv1.DERPMapRequest) (*adapterv1.DERPMapResponse, error) {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	dm, err := d.CurrentDERPMap(ctx)
	if err != nil {
		return nil, daemonError(tg, "DERP map", err)
	}
	return derpMapResponse(tg.Name, dm), nil
}

// maxLogLine bounds one log line; longer ones are cut.
const maxLogLine = 64 << 10

func (s *Service) StreamLogs(req *adapterv1.StreamLogsRequest, stream adapterv1.AdapterService_StreamLogsServer) error {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return err
	}
	ctx := stream.Context()
	r, err := d.TailDaemonLogs(ctx)
	if err != nil {
		return daemonError(tg, "log tap", err)
	}
	if c, ok := r.(io.Closer); ok {
		defer c.Close()
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLogLine)
	for sc.Scan() {
		line := logLine(sc.Bytes())
		if line == "" {
			continue
		}
		if err := stream.Send(&adapterv1.StreamLogsResponse{Line: line, Time: timestamppb.Now()}); err != nil {
			return err
		}
	}
	return streamEnd(ctx, tg, "log stream", sc.Err())
}

// logLine extracts the text of one logtap line ({"text": "..."}); lines
// that are not that JSON are passed through.
func logLine(b []byte) string {
	var m struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(b, &m) == nil && m.Text != "" {
		return strings.TrimRight(m.Text, "\n")
	}
	return strings.TrimRight(string(b), "\r\n")
}

// streamEnd reports why a server stream from the daemon ended: the caller
// went away (its own status), or the daemon did (Unavailable, so the caller
// knows to reopen).
func streamEnd(ctx context.Context, tg Target, what string, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if err == nil {
		err = io.EOF
	}
	return status.Errorf(codes.Unavailable, "target %q: %s from tailscaled at %s ended: %v", tg.Name, what, tg.Socket, err)
}

func (s *Service) StreamBusEvents(req *adapterv1.StreamBusEventsRequest, stream adapterv1.AdapterService_StreamBusEventsServer) error {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return err
	}
	ctx := stream.Context()
	for ev, err := range d.StreamBusEvents(ctx) {
		if err != nil {
			// A refusal comes back as the bare HTTP status ("403 Forbidden").
			if ctx.Err() == nil && !isTransportError(err) && isHTTPStatusLine(err.Error()) {
				return status.Errorf(codes.FailedPrecondition, "target %q: tailscaled refused bus events: %v", tg.Name, err)
			}
			return streamEnd(ctx, tg, "bus event stream", err)
		}
		j, jerr := json.Marshal(ev.Event)
		if jerr != nil {
			j, _ = json.Marshal(fmt.Sprint(ev.Event))
		}
		if err := stream.Send(&adapterv1.StreamBusEventsResponse{
			Type: ev.Type, From: ev.From, To: ev.To, Json: string(j), Count: int64(ev.Count), Time: timestamppb.Now(),
		}); err != nil {
			return err
		}
	}
	return streamEnd(ctx, tg, "bus event stream", nil)
}

func isHTTPStatusLine(s string) bool {
	return len(s) >= 4 && s[0] >= '1' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9' && s[3] == ' '
}
