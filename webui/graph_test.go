package webui

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"tsymbiote.dhouti.dev/controlplane"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

func TestBuildGraph(t *testing.T) {
	a := &adapterv1.Node{Id: "a", Hostname: "node-a", Os: "linux", TailscaleIps: []string{"100.64.0.1"}, Online: true}
	b := &adapterv1.Node{Id: "b", Hostname: "node-b", Os: "linux", TailscaleIps: []string{"100.64.0.2"}, Online: true,
		CurrentAddress: "127.0.0.1:41641", Active: true, LastHandshake: timestamppb.New(time.Unix(1000, 0))}
	c := &adapterv1.Node{Id: "c", Hostname: "node-c", Online: true, PeerRelay: "10.0.0.1:7777:3"}
	dd := &adapterv1.Node{Id: "d", Hostname: "node-d", Online: true, DerpRegion: "local", Active: true}
	e := &adapterv1.Node{Id: "e", Hostname: "node-e", Online: false}
	hosts := []HostState{
		{Host: Host{ID: "ad1|s", Adapter: "adapter-1", Target: "s"}, Status: &adapterv1.StatusResponse{Version: "1.102.5", Self: a, Peers: []*adapterv1.Node{b, c, dd, e}}},
		{Host: Host{ID: "ad2|s", Adapter: "adapter-2", Target: "s"}, Err: errors.New("rpc error: unavailable")},
	}
	devices := []controlplane.Device{
		{ID: "e", Name: "node-e", Hostname: "node-e", OS: "windows", ClientVersion: "1.90.0", Online: false, Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.5")}, Tags: []string{"tag:x"}},
		{ID: "f", Name: "node-f", Hostname: "node-f", OS: "macOS", Online: true},
		{ID: "b", Online: true, ClientVersion: "1.102.5"},
	}
	adapters := []AdapterState{{ID: "ad1", Name: "adapter-1"}, {ID: "ad2", Name: "adapter-2", Error: "listing targets: boom"}}
	g := BuildGraph(adapters, hosts, devices, time.Unix(2000, 0))

	byID := map[string]GraphNode{}
	for _, n := range g.Nodes {
		byID[n.ID] = n
	}
	if len(g.Nodes) != 6 {
		t.Fatalf("%d nodes: %+v", len(g.Nodes), g.Nodes)
	}
	if n := byID["a"]; n.Version != "1.102.5" || len(n.Hosts) != 1 || !n.Online {
		t.Errorf("host node: %+v", n)
	}
	if n := byID["e"]; n.Online || n.OS != "windows" || n.Version != "1.90.0" || len(n.Tags) != 1 || len(n.Addresses) != 1 {
		t.Errorf("offline peer merged with the control plane: %+v", n)
	}
	if n := byID["f"]; n.Name != "node-f" || !n.Online || len(n.SeenBy) != 0 {
		t.Errorf("device no adapter sees: %+v", n)
	}
	if n := byID["b"]; n.Version != "1.102.5" || n.Name != "node-b" {
		t.Errorf("peer with version from the control plane: %+v", n)
	}
	paths := map[string]PathKind{}
	for _, e := range g.Edges {
		paths[e.Target] = e.Path
	}
	want := map[string]PathKind{"b": PathDirect, "c": PathPeerRelay, "d": PathDERP, "e": PathIdle}
	for k, v := range want {
		if paths[k] != v {
			t.Errorf("edge a->%s: path %q, want %q", k, paths[k], v)
		}
	}
	if len(g.Edges) != 4 || g.Edges[0].LastHandshake.IsZero() {
		t.Errorf("edges %+v", g.Edges)
	}
	if len(g.Hosts) != 2 || g.Hosts[1].Error == "" || len(g.Errors) != 2 {
		t.Errorf("hosts %+v errors %q", g.Hosts, g.Errors)
	}
}
