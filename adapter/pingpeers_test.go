package adapter

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"tailscale.com/client/local"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// manyPeers is a fakeDaemon whose PingWithOpts answers any 100.64.x.y
// (but x.99, which no node has), counts the pings in flight, and can block
// every ping after the first blockAfter until ctx ends, or fail like a
// daemon that went away (down).
type manyPeers struct {
	fakeDaemon
	blockAfter int32
	down       bool

	inFlight, most, calls atomic.Int32
}

func (m *manyPeers) PingWithOpts(ctx context.Context, ip netip.Addr, _ tailcfg.PingType, _ local.PingOpts) (*ipnstate.PingResult, error) {
	n := m.inFlight.Add(1)
	defer m.inFlight.Add(-1)
	seq := m.calls.Add(1)
	for {
		old := m.most.Load()
		if n <= old || m.most.CompareAndSwap(old, n) {
			break
		}
	}
	switch {
	case m.down:
		return nil, fmt.Errorf("dial: %w", syscall.ECONNREFUSED)
	case m.blockAfter > 0 && seq > m.blockAfter:
		<-ctx.Done()
		return nil, ctx.Err()
	case ip.As4()[3] == 99:
		return &ipnstate.PingResult{Err: "no matching peer"}, nil
	}
	return &ipnstate.PingResult{IP: ip.String(), NodeIP: ip.String(), LatencySeconds: 0.002}, nil
}

// peersStream collects what PingPeers sends; it cancels its context after
// cancelAfter messages when that is set.
type peersStream struct {
	fakeStream[adapterv1.PingPeersResponse]
	cancel      context.CancelFunc
	cancelAfter int
}

func (p *peersStream) Send(m *adapterv1.PingPeersResponse) error {
	p.sent = append(p.sent, m)
	if p.cancelAfter > 0 && len(p.sent) == p.cancelAfter {
		p.cancel()
	}
	return nil
}

func peerIPs(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("100.64.%d.%d", i/200, i%200+1))
	}
	return out
}

func TestPingPeers(t *testing.T) {
	disco := adapterv1.PingType_PING_TYPE_DISCO
	for _, tc := range []struct {
		name        string
		req         *adapterv1.PingPeersRequest
		d           *manyPeers
		cancelAfter int // messages after which the caller cancels
		wantCode    codes.Code
		wantErr     string // in the status message
		wantSent    int
		wantFails   int // peers whose pings all failed
	}{
		{name: "empty", req: &adapterv1.PingPeersRequest{Type: disco}, wantCode: codes.InvalidArgument, wantErr: "peers is empty"},
		{name: "too-many", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(maxPingPeers + 1)}, wantCode: codes.InvalidArgument, wantErr: "4097 entries; at most 4096"},
		{name: "bad-address", req: &adapterv1.PingPeersRequest{Type: disco, Peers: []string{"100.64.0.1", "peer-b"}}, wantCode: codes.InvalidArgument, wantErr: `peers[1] "peer-b" is not an IP address`},
		{name: "control-chars", req: &adapterv1.PingPeersRequest{Type: disco, Peers: []string{"100.64.0.1\x00"}}, wantCode: codes.InvalidArgument, wantErr: "peers[0] contains control characters"},
		{name: "long", req: &adapterv1.PingPeersRequest{Type: disco, Peers: []string{strings.Repeat("1", 300)}}, wantCode: codes.InvalidArgument, wantErr: "peers[0] is 300 bytes"},
		{name: "no-type", req: &adapterv1.PingPeersRequest{Peers: peerIPs(2)}, wantCode: codes.InvalidArgument, wantErr: "not a ping type"},
		{name: "bad-count", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(2), Count: 21}, wantCode: codes.InvalidArgument, wantErr: "count is 21"},
		{name: "bad-timeout", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(2), Timeout: durationpb.New(-1)}, wantCode: codes.InvalidArgument, wantErr: "timeout is"},
		{name: "bad-concurrency", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(2), Concurrency: 257}, wantCode: codes.InvalidArgument, wantErr: "concurrency is 257; it must be between 1 and 256"},
		{name: "negative-concurrency", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(2), Concurrency: -1}, wantCode: codes.InvalidArgument, wantErr: "concurrency is -1"},
		{name: "unknown-target", req: &adapterv1.PingPeersRequest{Target: "nope", Type: disco, Peers: peerIPs(2)}, wantCode: codes.NotFound},
		{name: "one", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(1)}, wantSent: 1},
		{name: "many", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(250), Count: 2}, wantSent: 250, wantFails: 1},
		{name: "concurrency-64", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(300), Concurrency: 64}, wantSent: 300, wantFails: 2},
		{name: "concurrency-256", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(300), Concurrency: 256}, wantSent: 300, wantFails: 2},
		{name: "concurrency-1", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(30), Concurrency: 1}, wantSent: 30},
		{name: "tsmp-paths", req: &adapterv1.PingPeersRequest{Type: adapterv1.PingType_PING_TYPE_TSMP, Peers: peerIPs(40)}, wantSent: 40},
		{name: "daemon-down", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(40)}, d: &manyPeers{down: true}, wantCode: codes.Unavailable},
		// The first peer answers, every other ping hangs, and the caller
		// cancels after the first message.
		{name: "cancel", req: &adapterv1.PingPeersRequest{Type: disco, Peers: peerIPs(100)}, d: &manyPeers{blockAfter: 1}, cancelAfter: 1, wantCode: codes.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fakeService(t)
			d := tc.d
			if d == nil {
				d = &manyPeers{}
			}
			s.daemon = func(Target) daemon { return d }
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st := &peersStream{fakeStream: fakeStream[adapterv1.PingPeersResponse]{ctx: ctx}, cancel: cancel, cancelAfter: tc.cancelAfter}
			err := s.PingPeers(tc.req, st)
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("code %v (%v), want %v", got, err, tc.wantCode)
			}
			if tc.wantErr != "" && !strings.Contains(status.Convert(err).Message(), tc.wantErr) {
				t.Errorf("error %q does not say %q", status.Convert(err).Message(), tc.wantErr)
			}
			// PingPeers has returned: none of its pings may still run.
			if n := d.inFlight.Load(); n != 0 {
				t.Errorf("%d pings still in flight after PingPeers returned", n)
			}
			bound := cmp.Or(tc.req.Concurrency, defaultPingPeersConcurrency)
			if d.most.Load() > max(bound, 0) {
				t.Errorf("%d pings at once; the bound is %d", d.most.Load(), bound)
			}
			if tc.wantCode != codes.OK {
				return
			}
			if len(st.sent) != tc.wantSent {
				t.Fatalf("sent %d messages, want %d", len(st.sent), tc.wantSent)
			}
			seen := map[int32]bool{}
			fails := 0
			for _, m := range st.sent {
				if seen[m.Index] || m.Peer != tc.req.Peers[m.Index] || m.Ping.GetIp() != m.Peer || m.Took == nil {
					t.Errorf("bad or repeated message %v", m)
				}
				seen[m.Index] = true
				if m.Ping.GetSucceeded() == 0 {
					fails++
				} else if want := max(1, tc.req.Count); m.Ping.GetSucceeded() != want {
					t.Errorf("%s: %d pings succeeded, want %d", m.Peer, m.Ping.GetSucceeded(), want)
				}
				// Of these, only 100.64.0.2 is in the fake's status.
				if tc.req.Type == adapterv1.PingType_PING_TYPE_TSMP && m.Peer == "100.64.0.2" && !m.Ping.GetResults()[0].GetPathFromStatus() {
					t.Errorf("%s: tsmp result without a path from status: %v", m.Peer, m.Ping)
				}
			}
			if fails != tc.wantFails {
				t.Errorf("%d peers failed, want %d", fails, tc.wantFails)
			}
			t.Logf("%d peers, at most %d pings at once, %d pings made", len(tc.req.Peers), d.most.Load(), d.calls.Load())
		})
	}
}
