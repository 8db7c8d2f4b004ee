package webui

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// countingClient answers pings after a while and keeps the most it was
// asked at once.
type countingClient struct {
	AdapterClient // only Ping is called
	mu            sync.Mutex
	now, most     int
}

func (c *countingClient) Ping(ctx context.Context, req *adapterv1.PingRequest, _ ...grpc.CallOption) (*adapterv1.PingResponse, error) {
	c.mu.Lock()
	c.now++
	c.most = max(c.most, c.now)
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.now--; c.mu.Unlock() }()
	time.Sleep(2 * time.Millisecond)
	return &adapterv1.PingResponse{Ip: req.Peer, Succeeded: 1}, nil
}

// TestFanoutBounds checks the three bounds on calls in flight: per host,
// per adapter (one adapter serving many targets, as a node's CNI daemon
// does) and in all.
func TestFanoutBounds(t *testing.T) {
	shared := &countingClient{} // one adapter, 20 targets
	var hosts []HostState
	peers := []*adapterv1.Node{}
	for i := range 40 {
		peers = append(peers, &adapterv1.Node{Id: fmt.Sprintf("p%d", i), Online: true, TailscaleIps: []string{fmt.Sprintf("100.64.1.%d", i+1)}})
	}
	for i := range 20 {
		h := Host{ID: hostID("shared", fmt.Sprint(i)), AdapterID: "shared", Target: fmt.Sprint(i), client: shared}
		hosts = append(hosts, HostState{Host: h, Status: &adapterv1.StatusResponse{Peers: peers}})
	}
	alone := make([]*countingClient, 5) // five adapters with one target each
	for i := range alone {
		alone[i] = &countingClient{}
		id := fmt.Sprintf("alone%d", i)
		hosts = append(hosts, HostState{Host: Host{ID: hostID(id, "t"), AdapterID: id, Target: "t", client: alone[i]}, Status: &adapterv1.StatusResponse{Peers: peers}})
	}
	for _, tc := range []struct {
		name            string
		req             FanoutRequest
		shared, oneHost int // the most allowed at once
	}{
		{"defaults", FanoutRequest{Kind: FanoutPing}, perAdapter, defaultPerHost},
		{"perHost=2", FanoutRequest{Kind: FanoutPing, PerHost: 2}, 2 * 20, 2},
		{"concurrency=10", FanoutRequest{Kind: FanoutPing, Concurrency: 10}, 10, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shared.most = 0
			for _, c := range alone {
				c.most = 0
			}
			f, err := startFanout(context.Background(), tc.req, hosts, nil)
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for !f.State(false).Done {
				if time.Now().After(deadline) {
					t.Fatal("fan-out did not finish in 30s")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if st := f.State(false); st.Completed != 25*40 || st.Failed != 0 {
				t.Fatalf("completed %d of %d, %d failed", st.Completed, 25*40, st.Failed)
			}
			if shared.most > tc.shared {
				t.Errorf("shared adapter: %d calls at once, want at most %d", shared.most, tc.shared)
			}
			for i, c := range alone {
				if c.most > tc.oneHost {
					t.Errorf("adapter %d: %d calls at once, want at most %d", i, c.most, tc.oneHost)
				}
			}
			t.Logf("most at once: shared adapter %d, a lone host %d", shared.most, alone[0].most)
		})
	}
}
