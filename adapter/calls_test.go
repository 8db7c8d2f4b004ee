package adapter_test

import (
	"context"
	"errors"
	"io"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// call is one RPC with either valid or invalid arguments.
type call struct {
	name string
	do   func(ctx context.Context, c adapterv1.AdapterServiceClient) error
}

// everyCall lists every method of the service, each with valid arguments
// and with several invalid ones, for the permission and read-only tests.
// peer is a valid peer reference and addr a valid tailnet address.
func everyCall(peer, addr string) []call {
	long := strings.Repeat("x", 300)
	var out []call
	add := func(name string, f func(ctx context.Context, c adapterv1.AdapterServiceClient) error) {
		out = append(out, call{name, f})
	}
	add("ListTargets", func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
		_, err := c.ListTargets(ctx, &adapterv1.ListTargetsRequest{})
		return err
	})
	for _, tg := range []string{"", "no-such-target", long, "bad\x00target"} {
		add("Status/"+short(tg), func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
			_, err := c.Status(ctx, &adapterv1.StatusRequest{Target: tg})
			return err
		})
	}
	pings := []*adapterv1.PingRequest{
		{Peer: peer, Type: adapterv1.PingType_PING_TYPE_DISCO},
		{Peer: peer, Type: adapterv1.PingType_PING_TYPE_TSMP, Count: 2},
		{Peer: peer, Type: adapterv1.PingType_PING_TYPE_ICMP},
		{Peer: peer, Type: adapterv1.PingType_PING_TYPE_PEERAPI},
		{Peer: peer},           // no type
		{Peer: peer, Type: 42}, // unknown type
		{Type: adapterv1.PingType_PING_TYPE_DISCO}, // no peer
		{Peer: "no-such-peer", Type: adapterv1.PingType_PING_TYPE_DISCO},
		{Peer: peer, Type: adapterv1.PingType_PING_TYPE_DISCO, Count: -1},
		{Peer: peer, Type: adapterv1.PingType_PING_TYPE_DISCO, Count: 1000},
		{Peer: peer, Type: adapterv1.PingType_PING_TYPE_DISCO, Timeout: durationpb.New(-1)},
		{Peer: peer, Type: adapterv1.PingType_PING_TYPE_DISCO, Timeout: &durationpb.Duration{Seconds: 1, Nanos: -5}},
		{Peer: long, Type: adapterv1.PingType_PING_TYPE_DISCO},
		{Peer: "100.64.0.250", Type: adapterv1.PingType_PING_TYPE_DISCO, Timeout: durationpb.New(1e9)}, // nobody
	}
	for i, p := range pings {
		add("Ping/"+string(rune('a'+i)), func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
			_, err := c.Ping(ctx, p)
			return err
		})
	}
	for i, pp := range []*adapterv1.PingPeersRequest{
		{Peers: []string{addr, "100.64.0.250"}, Type: adapterv1.PingType_PING_TYPE_DISCO, Timeout: durationpb.New(1e9)},
		{Peers: []string{addr}, Type: adapterv1.PingType_PING_TYPE_TSMP, Count: 2},
		{Type: adapterv1.PingType_PING_TYPE_DISCO},                                  // no peers
		{Peers: []string{addr, "node-b"}, Type: adapterv1.PingType_PING_TYPE_DISCO}, // not an IP
		{Peers: []string{addr}}, // no type
		{Peers: []string{long}, Type: adapterv1.PingType_PING_TYPE_DISCO},
		{Peers: make([]string, 5000), Type: adapterv1.PingType_PING_TYPE_DISCO}, // too many
	} {
		add("PingPeers/"+string(rune('a'+i)), func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
			s, err := c.PingPeers(ctx, pp)
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
		})
	}
	for _, q := range []*adapterv1.QueryDNSRequest{
		{Name: "node-b.tsymbiote.test"}, {Name: "node-b.tsymbiote.test.", Type: "aaaa"},
		{Name: ""}, {Name: "bad name"}, {Name: "x.", Type: "ANY"}, {Name: "a..b"}, {Name: long},
		{Name: "node-b.tsymbiote.test", Type: "A&x=y"},
	} {
		add("QueryDNS/"+short(q.Name+"/"+q.Type), func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
			_, err := c.QueryDNS(ctx, q)
			return err
		})
	}
	add("Prefs", func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
		_, err := c.Prefs(ctx, &adapterv1.PrefsRequest{})
		return err
	})
	add("Prefs/bad", func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
		_, err := c.Prefs(ctx, &adapterv1.PrefsRequest{Target: "nope"})
		return err
	})
	add("DNSConfig", func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
		_, err := c.DNSConfig(ctx, &adapterv1.DNSConfigRequest{})
		return err
	})
	add("ServeConfig", func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
		_, err := c.ServeConfig(ctx, &adapterv1.ServeConfigRequest{})
		return err
	})
	add("Netcheck", func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
		_, err := c.Netcheck(ctx, &adapterv1.NetcheckRequest{})
		return err
	})
	for _, a := range []string{addr, addr + ":80", "", "not-an-ip", "100.64.0.250", long} {
		add("WhoIs/"+short(a), func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
			_, err := c.WhoIs(ctx, &adapterv1.WhoIsRequest{Address: a})
			return err
		})
	}
	add("DERPMap", func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
		_, err := c.DERPMap(ctx, &adapterv1.DERPMapRequest{})
		return err
	})
	for _, tg := range []string{"", "nope"} {
		add("StreamLogs/"+short(tg), func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
			s, err := c.StreamLogs(ctx, &adapterv1.StreamLogsRequest{Target: tg})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		})
		add("StreamBusEvents/"+short(tg), func(ctx context.Context, c adapterv1.AdapterServiceClient) error {
			s, err := c.StreamBusEvents(ctx, &adapterv1.StreamBusEventsRequest{Target: tg})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		})
	}
	return out
}

func short(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	if s == "" {
		return "empty"
	}
	return s
}
