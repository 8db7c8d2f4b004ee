package adapter

import (
	"context"
	"errors"
	"io"
	"iter"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"tailscale.com/client/local"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	"tailscale.com/types/dnstype"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
	"tailscale.com/util/eventbus"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// fakeDaemon answers like a small tailnet: itself and one peer, "peer-b"
// at 100.64.0.2.
type fakeDaemon struct{}

var peerKey = key.NewNode().Public()

func (fakeDaemon) Status(context.Context) (*ipnstate.Status, error) {
	return &ipnstate.Status{
		BackendState: "Running",
		Self:         &ipnstate.PeerStatus{ID: "self", HostName: "self", TailscaleIPs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}},
		Peer: map[key.NodePublic]*ipnstate.PeerStatus{peerKey: {
			ID: "b", HostName: "peer-b", DNSName: "peer-b.example.ts.net.", PublicKey: peerKey,
			TailscaleIPs: []netip.Addr{netip.MustParseAddr("100.64.0.2")}, Relay: "local", CurAddr: "127.0.0.1:41641",
		}},
	}, nil
}
func (f fakeDaemon) StatusWithoutPeers(ctx context.Context) (*ipnstate.Status, error) {
	return f.Status(ctx)
}
func (fakeDaemon) PingWithOpts(_ context.Context, ip netip.Addr, pt tailcfg.PingType, _ local.PingOpts) (*ipnstate.PingResult, error) {
	if ip != netip.MustParseAddr("100.64.0.2") {
		return &ipnstate.PingResult{Err: "no matching peer"}, nil
	}
	r := &ipnstate.PingResult{IP: ip.String(), NodeIP: ip.String(), LatencySeconds: 0.001}
	if pt == tailcfg.PingDisco {
		r.DERPRegionID, r.DERPRegionCode = 999, "local"
	}
	return r, nil
}
func (fakeDaemon) QueryDNS(_ context.Context, name, qt string) ([]byte, []*dnstype.Resolver, error) {
	return dnsAnswer(name, qt), nil, nil
}
func (fakeDaemon) GetPrefs(context.Context) (*ipn.Prefs, error) {
	p := ipn.NewPrefs()
	p.Hostname = "self"
	return p, nil
}
func (fakeDaemon) DNSConfig(context.Context) (*tailcfg.DNSConfig, error) {
	return &tailcfg.DNSConfig{Domains: []string{"example.ts.net"}, Proxied: true}, nil
}
func (fakeDaemon) GetDNSOSConfig(context.Context) (*apitype.DNSOSConfig, error) {
	return nil, errors.New("not supported")
}
func (fakeDaemon) GetServeConfig(context.Context) (*ipn.ServeConfig, error) {
	return &ipn.ServeConfig{TCP: map[uint16]*ipn.TCPPortHandler{443: {HTTPS: true}}}, nil
}
func (fakeDaemon) WhoIs(_ context.Context, addr string) (*apitype.WhoIsResponse, error) {
	if !strings.HasPrefix(addr, "100.64.0.2") {
		return nil, local.ErrPeerNotFound
	}
	return &apitype.WhoIsResponse{Node: &tailcfg.Node{StableID: "b", Name: "peer-b.example.ts.net.", Tags: []string{"tag:test"}}}, nil
}
func (fakeDaemon) CurrentDERPMap(context.Context) (*tailcfg.DERPMap, error) {
	return &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{999: {RegionID: 999, RegionCode: "local"}}}, nil
}
func (fakeDaemon) TailDaemonLogs(context.Context) (io.Reader, error) {
	return strings.NewReader(`{"text":"[logtap connected]\n"}` + "\nnot json\n" + `{"text":"magicsock: hello\n"}` + "\n"), nil
}
func (fakeDaemon) WatchIPNBus(context.Context, ipn.NotifyWatchOpt) (*local.IPNBusWatcher, error) {
	// ReportedNetcheck's conversion is tested on its own; its read of the
	// bus against a real tailscaled (TestEndToEnd).
	return nil, errors.New("fake daemon has no IPN bus")
}
func (fakeDaemon) StreamBusEvents(context.Context) iter.Seq2[eventbus.DebugEvent, error] {
	return func(yield func(eventbus.DebugEvent, error) bool) {
		if yield(eventbus.DebugEvent{Count: 1, Type: "x.Event", From: "a", To: []string{"b"}, Event: map[string]int{"n": 1}}, nil) {
			yield(eventbus.DebugEvent{}, io.ErrUnexpectedEOF)
		}
	}
}

// dnsAnswer builds a response with one answer of the asked type.
func dnsAnswer(name, qt string) []byte {
	n := dnsmessage.MustNewName(name)
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true, Authoritative: true})
	b.EnableCompression()
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(b.StartQuestions())
	must(b.Question(dnsmessage.Question{Name: n, Type: dnsTypes[qt], Class: dnsmessage.ClassINET}))
	must(b.StartAnswers())
	h := dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: 60}
	target := dnsmessage.MustNewName("target.example.")
	switch qt {
	case "A":
		must(b.AResource(h, dnsmessage.AResource{A: [4]byte{100, 64, 0, 2}}))
	case "AAAA":
		must(b.AAAAResource(h, dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("fd7a:115c:a1e0::2").As16()}))
	case "CNAME":
		must(b.CNAMEResource(h, dnsmessage.CNAMEResource{CNAME: target}))
	case "MX":
		must(b.MXResource(h, dnsmessage.MXResource{Pref: 10, MX: target}))
	case "NS":
		must(b.NSResource(h, dnsmessage.NSResource{NS: target}))
	case "PTR":
		must(b.PTRResource(h, dnsmessage.PTRResource{PTR: target}))
	case "SOA":
		must(b.SOAResource(h, dnsmessage.SOAResource{NS: target, MBox: target, Serial: 1, Refresh: 2, Retry: 3, Expire: 4, MinTTL: 5}))
	case "SRV":
		must(b.SRVResource(h, dnsmessage.SRVResource{Priority: 1, Weight: 2, Port: 3, Target: target}))
	case "TXT":
		must(b.TXTResource(h, dnsmessage.TXTResource{TXT: []string{"hello", "world"}}))
	}
	out, err := b.Finish()
	if err != nil {
		panic(err)
	}
	return out
}

func fakeService(t testing.TB) *Service {
	tg, err := NewTargets([]string{"/nonexistent/fake.sock"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewService(logger.Discard, tg)
	s.daemon = func(Target) daemon { return fakeDaemon{} }
	return s
}

func TestQueryDNSTypes(t *testing.T) {
	s := fakeService(t)
	want := map[string]string{
		"A": "100.64.0.2", "AAAA": "fd7a:115c:a1e0::2", "CNAME": "target.example.", "MX": "10 target.example.",
		"NS": "target.example.", "PTR": "target.example.", "SOA": "target.example. target.example. 1 2 3 4 5",
		"SRV": "1 2 3 target.example.", "TXT": `"hello" "world"`,
	}
	for qt, data := range want {
		r, err := s.QueryDNS(context.Background(), &adapterv1.QueryDNSRequest{Name: "peer-b.example.ts.net", Type: strings.ToLower(qt)})
		if err != nil {
			t.Fatalf("%s: %v", qt, err)
		}
		if r.Rcode != "NOERROR" || len(r.Answers) != 1 || r.Answers[0].Data != data || r.Answers[0].Type != qt {
			t.Errorf("%s: %v, want data %q", qt, r, data)
		}
	}
}

func TestPingPathAndPeerLookup(t *testing.T) {
	s := fakeService(t)
	ctx := context.Background()
	for _, ref := range []string{"peer-b", "PEER-B", "peer-b.example.ts.net", "peer-b.example.ts.net.", "b", "100.64.0.2"} {
		r, err := s.Ping(ctx, &adapterv1.PingRequest{Peer: ref, Type: adapterv1.PingType_PING_TYPE_TSMP, Count: 2})
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if r.Succeeded != 2 || r.Results[0].Path != adapterv1.PathKind_PATH_KIND_DIRECT || !r.Results[0].PathFromStatus || r.Results[0].Endpoint != "127.0.0.1:41641" {
			t.Errorf("%s: %v", ref, r)
		}
	}
	r, err := s.Ping(ctx, &adapterv1.PingRequest{Peer: "peer-b", Type: adapterv1.PingType_PING_TYPE_DISCO})
	if err != nil || r.Results[0].Path != adapterv1.PathKind_PATH_KIND_DERP || r.Results[0].DerpRegionId != 999 || r.Results[0].PathFromStatus {
		t.Errorf("disco: %v, %v", r, err)
	}
}

// fakeStream is a server stream that collects what is sent.
type fakeStream[T any] struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*T
}

func (f *fakeStream[T]) Send(m *T) error             { f.sent = append(f.sent, m); return nil }
func (f *fakeStream[T]) Context() context.Context    { return f.ctx }
func (f *fakeStream[T]) SetHeader(metadata.MD) error { return nil }

func TestStreams(t *testing.T) {
	s := fakeService(t)
	ls := &fakeStream[adapterv1.StreamLogsResponse]{ctx: context.Background()}
	err := s.StreamLogs(&adapterv1.StreamLogsRequest{}, ls)
	if status.Code(err) != codes.Unavailable || len(ls.sent) != 3 || ls.sent[1].Line != "not json" || ls.sent[2].Line != "magicsock: hello" {
		t.Errorf("logs: %v, %v", ls.sent, err)
	}
	bs := &fakeStream[adapterv1.StreamBusEventsResponse]{ctx: context.Background()}
	err = s.StreamBusEvents(&adapterv1.StreamBusEventsRequest{}, bs)
	if status.Code(err) != codes.Unavailable || len(bs.sent) != 1 || bs.sent[0].Json != `{"n":1}` {
		t.Errorf("bus: %v, %v", bs.sent, err)
	}
}

// allowedCodes are the statuses a request may end in; Unknown (an error
// the service did not classify) and a panic are the failures.
var allowedCodes = map[codes.Code]bool{
	codes.OK: true, codes.InvalidArgument: true, codes.NotFound: true, codes.Unavailable: true,
	codes.FailedPrecondition: true, codes.DeadlineExceeded: true, codes.Internal: true,
}

// FuzzRequestDecoding decodes arbitrary bytes as every request type, as the
// gRPC server would, and runs each decoded request through the service
// (with a fake daemon). Nothing may panic, and every error must be a
// classified gRPC status.
func FuzzRequestDecoding(f *testing.F) {
	for _, m := range []proto.Message{
		&adapterv1.StatusRequest{Target: "x"},
		&adapterv1.PingRequest{Peer: "peer-b", Type: adapterv1.PingType_PING_TYPE_ICMP, Count: 3, Timeout: durationpb.New(time.Second)},
		&adapterv1.PingRequest{Peer: "100.64.0.2", Type: 99, Count: -4},
		&adapterv1.PingPeersRequest{Peers: []string{"100.64.0.2", "100.64.0.3"}, Type: adapterv1.PingType_PING_TYPE_TSMP, Count: 2},
		&adapterv1.QueryDNSRequest{Name: "peer-b.example.ts.net", Type: "SRV"},
		&adapterv1.WhoIsRequest{Address: "100.64.0.2:443"},
		&adapterv1.StreamLogsRequest{Target: "\x00"},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Add([]byte{0xff, 0x01})
	s := fakeService(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		check := func(what string, err error) {
			if st, ok := status.FromError(err); !ok || !allowedCodes[st.Code()] {
				t.Fatalf("%s(%x): unclassified error %v", what, data, err)
			}
		}
		decode := func(m proto.Message) bool { return proto.Unmarshal(data, m) == nil }

		if m := new(adapterv1.StatusRequest); decode(m) {
			_, err := s.Status(ctx, m)
			check("Status", err)
		}
		if m := new(adapterv1.PingRequest); decode(m) {
			if m.Timeout != nil && m.Timeout.AsDuration() > 50*time.Millisecond {
				m.Timeout = durationpb.New(50 * time.Millisecond) // keep the fuzzer fast
			}
			_, err := s.Ping(ctx, m)
			check("Ping", err)
		}
		if m := new(adapterv1.PingPeersRequest); decode(m) {
			if m.Timeout != nil && m.Timeout.AsDuration() > 50*time.Millisecond {
				m.Timeout = durationpb.New(50 * time.Millisecond)
			}
			err := s.PingPeers(m, &fakeStream[adapterv1.PingPeersResponse]{ctx: ctx})
			check("PingPeers", err)
		}
		if m := new(adapterv1.QueryDNSRequest); decode(m) {
			_, err := s.QueryDNS(ctx, m)
			check("QueryDNS", err)
		}
		if m := new(adapterv1.WhoIsRequest); decode(m) {
			_, err := s.WhoIs(ctx, m)
			check("WhoIs", err)
		}
		if m := new(adapterv1.PrefsRequest); decode(m) {
			_, err := s.Prefs(ctx, m)
			check("Prefs", err)
		}
		if m := new(adapterv1.DNSConfigRequest); decode(m) {
			_, err := s.DNSConfig(ctx, m)
			check("DNSConfig", err)
		}
		if m := new(adapterv1.ServeConfigRequest); decode(m) {
			_, err := s.ServeConfig(ctx, m)
			check("ServeConfig", err)
		}
		if m := new(adapterv1.DERPMapRequest); decode(m) {
			_, err := s.DERPMap(ctx, m)
			check("DERPMap", err)
		}
		if m := new(adapterv1.StreamLogsRequest); decode(m) {
			err := s.StreamLogs(m, &fakeStream[adapterv1.StreamLogsResponse]{ctx: ctx})
			check("StreamLogs", err)
		}
		if m := new(adapterv1.StreamBusEventsRequest); decode(m) {
			err := s.StreamBusEvents(m, &fakeStream[adapterv1.StreamBusEventsResponse]{ctx: ctx})
			check("StreamBusEvents", err)
		}
	})
}

// FuzzParseDNSResponse feeds arbitrary bytes to the DNS response decoder,
// which reads what tailscaled (and through it, upstream resolvers) sent.
func FuzzParseDNSResponse(f *testing.F) {
	for qt := range dnsTypes {
		f.Add(dnsAnswer("a.example.", qt))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _, _ = parseDNSResponse(raw)
	})
}

// TestRcodeNames checks that response codes come out as the proto documents
// them (dig's names), not as Go's DNS library spells them.
func TestRcodeNames(t *testing.T) {
	for code, want := range map[dnsmessage.RCode]string{
		dnsmessage.RCodeSuccess:   "NOERROR",
		dnsmessage.RCodeNameError: "NXDOMAIN",
		dnsmessage.RCodeRefused:   "REFUSED",
		dnsmessage.RCode(9):       "NOTAUTH",
		dnsmessage.RCode(11):      "RCODE11",
	} {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true, RCode: code})
		raw, err := b.Finish()
		if err != nil {
			t.Fatal(err)
		}
		got, answers, err := parseDNSResponse(raw)
		if err != nil || got != want || len(answers) != 0 {
			t.Errorf("rcode %d: got %q, %d answers, %v; want %q", code, got, len(answers), err, want)
		}
	}
}
