package adapter_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"tsymbiote.dhouti.dev/adapter"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// TestEndToEnd is acceptance item 1: an adapter attached to node-a answers
// a tag:tsymbiote-webui tsnet client over the tailnet with real data.
func TestEndToEnd(t *testing.T) {
	w := newWorld(t, nil)
	c, _ := w.caller(t, "webui", "tag:tsymbiote-webui")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("ListTargets", func(t *testing.T) {
		r, err := c.ListTargets(ctx, &adapterv1.ListTargetsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Targets) != 1 || !r.Targets[0].Reachable || r.DefaultTarget != w.a.Socket {
			t.Fatalf("ListTargets = %v", r)
		}
	})

	t.Run("Status", func(t *testing.T) {
		r, err := c.Status(ctx, &adapterv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Self.GetHostname() != "node-a" || r.BackendState != "Running" {
			t.Errorf("self = %s, state %s", r.Self.GetHostname(), r.BackendState)
		}
		var found bool
		for _, p := range r.Peers {
			t.Logf("peer %s %s ips=%v tags=%v online=%v relay=%s cur=%q", p.Hostname, p.Id, p.TailscaleIps, p.Tags, p.Online, p.DerpRegion, p.CurrentAddress)
			if p.Hostname == "node-b" && len(p.TailscaleIps) > 0 && p.TailscaleIps[0] == w.bIP.String() {
				found = true
			}
		}
		if !found {
			t.Errorf("node-b (%v) not among %d peers", w.bIP, len(r.Peers))
		}
	})

	for _, pt := range []adapterv1.PingType{
		adapterv1.PingType_PING_TYPE_DISCO, adapterv1.PingType_PING_TYPE_TSMP,
		adapterv1.PingType_PING_TYPE_ICMP, adapterv1.PingType_PING_TYPE_PEERAPI,
	} {
		t.Run("Ping/"+strings.TrimPrefix(pt.String(), "PING_TYPE_"), func(t *testing.T) {
			var r *adapterv1.PingResponse
			// The first pings after start-up may still be setting up the
			// path; a few tries keep the test about the API, not timing.
			for try := 0; try < 5; try++ {
				var err error
				r, err = c.Ping(ctx, &adapterv1.PingRequest{Peer: "node-b", Type: pt, Count: 3, Timeout: durationpb.New(5 * time.Second)})
				if err != nil {
					t.Fatal(err)
				}
				if r.Succeeded == 3 {
					break
				}
			}
			for _, res := range r.Results {
				t.Logf("%s seq=%d latency=%v path=%v endpoint=%q derp=%d/%q relay=%q from_status=%v err=%q",
					pt, res.Seq, res.Latency.AsDuration(), res.Path, res.Endpoint, res.DerpRegionId, res.DerpRegionCode, res.PeerRelay, res.PathFromStatus, res.Error)
			}
			if r.Succeeded == 0 || r.AvgLatency.AsDuration() <= 0 {
				t.Fatalf("no successful %s ping: %v", pt, r)
			}
			for _, res := range r.Results {
				if res.Error == "" && res.Path == adapterv1.PathKind_PATH_KIND_UNSPECIFIED {
					t.Errorf("seq %d: no path", res.Seq)
				}
			}
			if r.Ip != w.bIP.String() {
				t.Errorf("ip = %s, want %s", r.Ip, w.bIP)
			}
		})
	}

	// The WebUI pings every peer from every adapter at once.
	t.Run("Concurrent", func(t *testing.T) {
		types := []adapterv1.PingType{
			adapterv1.PingType_PING_TYPE_DISCO, adapterv1.PingType_PING_TYPE_TSMP,
			adapterv1.PingType_PING_TYPE_ICMP, adapterv1.PingType_PING_TYPE_PEERAPI,
		}
		const n = 24
		errc := make(chan error, n)
		t0 := time.Now()
		for i := range n {
			go func() {
				if i%3 == 0 {
					_, err := c.Status(ctx, &adapterv1.StatusRequest{})
					errc <- err
					return
				}
				r, err := c.Ping(ctx, &adapterv1.PingRequest{Peer: w.bIP.String(), Type: types[i%len(types)], Count: 2})
				if err == nil && r.Succeeded == 0 {
					err = fmt.Errorf("%v: no ping succeeded: %v", types[i%len(types)], r.Results)
				}
				errc <- err
			}()
		}
		for range n {
			if err := <-errc; err != nil {
				t.Error(err)
			}
		}
		t.Logf("%d concurrent calls (Status and Pings of every type) in %v", n, time.Since(t0))
	})

	// What the WebUI's ping-all sends: one stream for all of a host's
	// peers, here node-b and an address no node has.
	t.Run("PingPeers", func(t *testing.T) {
		for _, pt := range []adapterv1.PingType{adapterv1.PingType_PING_TYPE_DISCO, adapterv1.PingType_PING_TYPE_TSMP} {
			peers := []string{w.bIP.String(), "100.64.0.250"}
			s, err := c.PingPeers(ctx, &adapterv1.PingPeersRequest{Peers: peers, Type: pt, Count: 2, Timeout: durationpb.New(2 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			got := map[int32]*adapterv1.PingPeersResponse{}
			for {
				m, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("%v: %v", pt, err)
				}
				t.Logf("%v #%d %s: %d/2 in %v, avg %v, results %v", pt, m.Index, m.Peer, m.Ping.GetSucceeded(), m.Took.AsDuration(), m.Ping.GetAvgLatency().AsDuration(), m.Ping.GetResults())
				if got[m.Index] != nil || m.Peer != peers[m.Index] {
					t.Errorf("%v: repeated or misnamed message %v", pt, m)
				}
				got[m.Index] = m
			}
			if len(got) != 2 {
				t.Fatalf("%v: %d messages, want 2", pt, len(got))
			}
			if b := got[0].Ping; b.GetSucceeded() == 0 || b.GetIp() != w.bIP.String() || b.GetResults()[len(b.GetResults())-1].GetPath() == adapterv1.PathKind_PATH_KIND_UNSPECIFIED {
				t.Errorf("%v: node-b: %v", pt, b)
			}
			if n := got[1].Ping; n.GetSucceeded() != 0 || n.GetResults()[0].GetError() == "" {
				t.Errorf("%v: nobody answered at 100.64.0.250, yet: %v", pt, n)
			}
		}
	})

	t.Run("QueryDNS", func(t *testing.T) {
		st, err := c.Status(ctx, &adapterv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var name string
		for _, p := range st.Peers {
			if p.Hostname == "node-b" {
				name = p.DnsName
			}
		}
		r, err := c.QueryDNS(ctx, &adapterv1.QueryDNSRequest{Name: name, Type: "A"})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("QueryDNS %s: rcode=%s answers=%v resolvers=%v", name, r.Rcode, r.Answers, r.Resolvers)
		if r.Rcode != "NOERROR" || len(r.Answers) == 0 || r.Answers[0].Data != w.bIP.String() {
			t.Errorf("QueryDNS(%s) = %v, want %s", name, r, w.bIP)
		}
	})

	t.Run("Prefs", func(t *testing.T) {
		r, err := c.Prefs(ctx, &adapterv1.PrefsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("prefs: control=%s want_running=%v corp_dns=%v hostname=%s tags=%v node=%s", r.ControlUrl, r.WantRunning, r.CorpDns, r.Hostname, r.AdvertiseTags, r.NodeId)
		if r.ControlUrl != w.hs.URL || !r.WantRunning || r.CorpDns || r.Hostname != "node-a" {
			t.Errorf("prefs = %v", r)
		}
	})

	t.Run("DNSConfig", func(t *testing.T) {
		r, err := c.DNSConfig(ctx, &adapterv1.DNSConfigRequest{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("dns config: magic_dns=%v domains=%v accept_dns=%v routes=%d os_ns=%v os_err=%q", r.MagicDns, r.Domains, r.AcceptDns, len(r.Routes), r.OsNameservers, r.OsError)
		if r.AcceptDns || len(r.Domains) == 0 {
			t.Errorf("dns config = %v", r)
		}
	})

	t.Run("ServeConfig", func(t *testing.T) {
		r, err := c.ServeConfig(ctx, &adapterv1.ServeConfigRequest{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("serve config: %s", r.Json)
	})

	t.Run("Netcheck", func(t *testing.T) {
		r, err := c.Netcheck(ctx, &adapterv1.NetcheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("netcheck: udp=%v v4=%v global_v4=%s preferred=%d/%s regions=%v took=%v", r.Udp, r.Ipv4, r.GlobalV4, r.PreferredDerpId, r.PreferredDerpCode, r.Regions, r.Took.AsDuration())
		if !r.Udp || r.PreferredDerpId == 0 || len(r.Regions) == 0 {
			t.Errorf("netcheck = %v", r)
		}
	})

	// A tailscale-cni pod's socket, as the daemon lays them out: the
	// netcheck is the node's own last report, named for the pod.
	t.Run("NetcheckAsPod", func(t *testing.T) {
		pods := t.TempDir()
		if err := os.Mkdir(filepath.Join(pods, "default_web-1"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(w.a.Socket, filepath.Join(pods, "default_web-1", "tailscaled.sock")); err != nil {
			t.Fatal(err)
		}
		tg, err := adapter.NewTargets([]string{pods})
		if err != nil {
			t.Fatal(err)
		}
		r, err := adapter.NewService(t.Logf, tg).Netcheck(ctx, &adapterv1.NetcheckRequest{Target: "default_web-1"})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pod netcheck: source=%v pod=%s/%s self=%s %v udp=%v v4=%v preferred=%d/%s regions=%v took=%v",
			r.Source, r.PodNamespace, r.PodName, r.Self.GetHostname(), r.Self.GetTailscaleIps(), r.Udp, r.Ipv4,
			r.PreferredDerpId, r.PreferredDerpCode, r.Regions, r.Took.AsDuration())
		if r.Source != adapterv1.NetcheckSource_NETCHECK_SOURCE_TARGET || r.PodNamespace != "default" || r.PodName != "web-1" ||
			r.Self.GetHostname() != "node-a" || !r.Udp || r.PreferredDerpId == 0 || len(r.Regions) == 0 {
			t.Errorf("pod netcheck = %v", r)
		}
	})

	t.Run("WhoIs", func(t *testing.T) {
		r, err := c.WhoIs(ctx, &adapterv1.WhoIsRequest{Address: w.bIP.String()})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("whois %s: node=%s %s tags=%v user=%s", w.bIP, r.Node.GetId(), r.Node.GetHostname(), r.Node.GetTags(), r.UserLoginName)
		if r.Node.GetHostname() != "node-b" || len(r.Node.GetTags()) != 1 || r.Node.Tags[0] != "tag:test" {
			t.Errorf("whois = %v", r)
		}
	})

	t.Run("DERPMap", func(t *testing.T) {
		r, err := c.DERPMap(ctx, &adapterv1.DERPMapRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Regions) != 1 || r.Regions[0].RegionId != 999 || len(r.Regions[0].Nodes) == 0 {
			t.Fatalf("DERP map = %v", r)
		}
		t.Logf("derp map: region %d %s nodes=%v", r.Regions[0].RegionId, r.Regions[0].RegionCode, r.Regions[0].Nodes)
	})

	t.Run("StreamLogs", func(t *testing.T) {
		sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
		defer scancel()
		s, err := c.StreamLogs(sctx, &adapterv1.StreamLogsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		// Pings make node-a log; keep it busy until lines arrive.
		go func() {
			for sctx.Err() == nil {
				_, _ = c.Ping(sctx, &adapterv1.PingRequest{Peer: "node-b", Type: adapterv1.PingType_PING_TYPE_TSMP})
				time.Sleep(200 * time.Millisecond)
			}
		}()
		var lines []string
		for len(lines) < 3 {
			m, err := s.Recv()
			if err != nil {
				t.Fatalf("after %d lines: %v", len(lines), err)
			}
			lines = append(lines, m.Line)
		}
		t.Logf("log lines: %q", lines)
	})

	t.Run("StreamBusEvents", func(t *testing.T) {
		sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
		defer scancel()
		s, err := c.StreamBusEvents(sctx, &adapterv1.StreamBusEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		// A new peer joining changes node-a's netmap, which publishes
		// events on its bus (pings alone may not).
		w.hs.NewNode(t, headscaletest.NodeOptions{Hostname: "bus-trigger", Tags: []string{"tag:test"}})
		// The first message is the daemon's "[event listener connected]".
		for n := 0; ; n++ {
			m, err := s.Recv()
			if err != nil {
				t.Fatalf("after %d messages: %v", n, err)
			}
			if m.Type != "" {
				t.Logf("bus event #%d: %s from %s to %v: %.120s", m.Count, m.Type, m.From, m.To, m.Json)
				break
			}
		}
	})
}

// recvErr returns the first error of a server stream.
func recvErr[T any](s grpc.ServerStreamingClient[T], err error) error {
	if err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: code %v (%v), want %v", what, got, err, want)
	}
}
