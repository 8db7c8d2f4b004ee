package webui

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/proto/contract"
)

// TestBrowserLabels checks in Chromium that the graph stays readable: on a
// tailnet shaped like make demo's (13 nodes: 4 tailscaled and 2 CNI pods,
// each with its adapter, and the WebUI), on one of 50 drawn nodes and on
// one with few hosts among many peers, the adapters are badges on their hosts, and after a ping all no two labels
// (node names and the latencies shown on edges) overlap, measured from the
// boxes cytoscape rendered, before and while a host is hovered. It keeps a
// screenshot of each under bin/test-artifacts (or $E2E_OUT_DIR).
func TestBrowserLabels(t *testing.T) {
	chromium := needBrowser(t)
	out := os.Getenv("E2E_OUT_DIR")
	if out == "" {
		out = filepath.Join("..", "bin", "test-artifacts", t.Name())
	}
	out, _ = filepath.Abs(out)
	for _, tc := range []struct {
		daemons, pods, plain int
		drawn                int // nodes less the adapters, which are badges
		size                 int // the size the test reports: all nodes for the demo, else those drawn
	}{
		{daemons: 4, pods: 2, plain: 0, drawn: 7, size: 13},    // make demo: 13 nodes
		{daemons: 30, pods: 6, plain: 13, drawn: 50, size: 50}, // 86 nodes, 50 drawn
		{daemons: 2, pods: 0, plain: 30, drawn: 33, size: 35},  // few hosts among many peers: the hosts inside
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			disc, nodes := fakeTailnet(t, tc.daemons, tc.pods, tc.plain)
			_, hs := newTestServerDisc(t, disc, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", "e2e/labels.mjs")
			cmd.Dir = "frontend"
			cmd.Env = append(os.Environ(), "WEBUI_URL="+hs.URL, "OUT_DIR="+out, "CHROMIUM="+chromium,
				fmt.Sprintf("NODES=%d", tc.size), fmt.Sprintf("GRAPH_NODES=%d", nodes),
				fmt.Sprintf("EXPECT_DRAWN=%d", tc.drawn), fmt.Sprintf("EXPECT_BADGES=%d", tc.daemons+tc.pods))
			b, err := cmd.CombinedOutput()
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				t.Log(line)
			}
			if err != nil {
				t.Fatalf("e2e: %v", err)
			}
		})
	}
}

// endpoints is a fixed list of adapters, found as the control plane
// would: each is a tailnet node of its own, with that node's ID.
type endpoints []Endpoint

func (e endpoints) Discover(context.Context) ([]Endpoint, error) { return e, nil }

// fakeTailnet starts a fake adapter for each host of a tailnet shaped like
// make demo's: daemons tailscaled hosts, pods CNI pod hosts, an adapter
// node for each host, plain peers without an adapter and the WebUI, all
// seeing each other. It returns the adapters and the number of nodes.
func fakeTailnet(t testing.TB, daemons, pods, plain int) (endpoints, int) {
	t.Helper()
	var (
		nodes []*adapterv1.Node
		hosts []*adapterv1.Node
		eps   endpoints
	)
	add := func(id, name string, tags ...string) *adapterv1.Node {
		i := len(nodes) + 1
		n := &adapterv1.Node{
			Id: id, Hostname: name, Os: "linux", Online: true, Tags: tags,
			TailscaleIps: []string{fmt.Sprintf("100.64.%d.%d", i>>8, i&255)}, CurrentAddress: "127.0.0.1:41641",
		}
		nodes = append(nodes, n)
		return n
	}
	host := func(name, adapterName string, tags ...string) {
		hosts = append(hosts, add("n-"+name, name, tags...))
		a := add("a-"+name, adapterName, contract.TagAdapter)
		eps = append(eps, Endpoint{ID: a.Id, Name: a.Hostname, Online: true})
	}
	for i := 1; i <= daemons; i++ {
		name := fmt.Sprintf("demo-node-%d", i)
		host(name, "tsymbiote-adapter-"+name)
	}
	for i := 1; i <= pods; i++ {
		host(fmt.Sprintf("demo-default-pod-%d", i), fmt.Sprintf("tsymbiote-adapter-pod-%d", i), contract.TagPod)
	}
	for i := 1; i <= plain; i++ {
		add(fmt.Sprintf("p-%d", i), fmt.Sprintf("laptop-%d", i))
	}
	add("w", "tsymbiote-webui-demo", contract.TagWebUI)
	for i, self := range hosts {
		f := &fakeAdapter{self: self, delay: time.Millisecond}
		for _, n := range nodes {
			if n != self {
				f.peers = append(f.peers, n)
			}
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer()
		adapterv1.RegisterAdapterServiceServer(gs, f)
		go func() { _ = gs.Serve(ln) }()
		t.Cleanup(gs.Stop)
		eps[i].Addr = ln.Addr().String()
	}
	return eps, len(nodes)
}
