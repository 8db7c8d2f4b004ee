package webui

import (
	"slices"
	"sort"
	"time"

	"tsymbiote.dhouti.dev/controlplane"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// edgePath is the path the host's status says traffic to p takes now.
func edgePath(p *adapterv1.Node) PathKind {
	switch {
	case p.GetCurrentAddress() != "":
		return PathDirect
	case p.GetPeerRelay() != "":
		return PathPeerRelay
	case p.GetActive() || p.GetRxBytes() > 0:
		return PathDERP
	}
	return PathIdle
}

// BuildGraph merges the hosts' statuses and the control plane's devices
// (either may be missing) into one graph. It is pure: no calls.
func BuildGraph(adapters []AdapterState, hosts []HostState, devices []controlplane.Device, now time.Time) *Graph {
	g := &Graph{Adapters: adapters, GeneratedAt: now, Nodes: []GraphNode{}, Edges: []GraphEdge{}, Hosts: []GraphHost{}, Errors: []string{}}
	if g.Adapters == nil {
		g.Adapters = []AdapterState{}
	}
	nodes := map[string]*GraphNode{}
	node := func(id string) *GraphNode {
		n := nodes[id]
		if n == nil {
			n = &GraphNode{ID: id, Tags: []string{}, Addresses: []string{}, Hosts: []string{}, SeenBy: []string{}}
			nodes[id] = n
		}
		return n
	}
	merge := func(n *GraphNode, p *adapterv1.Node, authoritative bool) {
		if n.Name == "" || authoritative {
			n.Name = firstNonEmpty(p.GetHostname(), n.Name)
			n.DNSName = firstNonEmpty(p.GetDnsName(), n.DNSName)
			n.OS = firstNonEmpty(p.GetOs(), n.OS)
			n.User = firstNonEmpty(p.GetUser(), n.User)
		}
		if len(p.GetTags()) > 0 {
			n.Tags = slices.Clone(p.GetTags())
		}
		if len(p.GetTailscaleIps()) > 0 {
			n.Addresses = slices.Clone(p.GetTailscaleIps())
		}
		// A node is online if anyone sees it online; a host is online by
		// definition when it answered.
		n.Online = n.Online || p.GetOnline() || authoritative
		if ls := p.GetLastSeen().AsTime(); p.GetLastSeen() != nil && ls.After(n.LastSeen) {
			n.LastSeen = ls
		}
	}
	for _, h := range hosts {
		gh := GraphHost{ID: h.ID, Name: h.Target, Adapter: h.Adapter, Target: h.Target}
		if h.Err != nil {
			gh.Error = h.Err.Error()
			g.Errors = append(g.Errors, "host "+h.Target+" via "+h.Adapter+": "+h.Err.Error())
		}
		if st := h.Status; st != nil && st.GetSelf() != nil && st.GetSelf().GetId() != "" {
			self := st.GetSelf()
			gh.NodeID, gh.Name, gh.Version, gh.State = self.GetId(), self.GetHostname(), st.GetVersion(), st.GetBackendState()
			n := node(self.GetId())
			merge(n, self, true)
			n.Version = st.GetVersion()
			n.Hosts = append(n.Hosts, h.ID)
			for _, p := range st.GetPeers() {
				if p.GetId() == "" {
					continue
				}
				pn := node(p.GetId())
				merge(pn, p, false)
				pn.SeenBy = append(pn.SeenBy, h.ID)
				e := GraphEdge{
					ID: h.ID + "->" + p.GetId(), Source: self.GetId(), Target: p.GetId(), Host: h.ID,
					Path: edgePath(p), CurrentAddress: p.GetCurrentAddress(), PeerRelay: p.GetPeerRelay(),
					DERPRegion: p.GetDerpRegion(), Active: p.GetActive(), Online: p.GetOnline(),
					RxBytes: p.GetRxBytes(), TxBytes: p.GetTxBytes(),
				}
				if p.GetLastHandshake() != nil && p.GetLastHandshake().GetSeconds() > 0 {
					e.LastHandshake = p.GetLastHandshake().AsTime()
				}
				g.Edges = append(g.Edges, e)
			}
		}
		g.Hosts = append(g.Hosts, gh)
	}
	for _, d := range devices {
		if d.ID == "" {
			continue
		}
		n := node(d.ID)
		if n.Name == "" {
			n.Name = firstNonEmpty(d.Hostname, d.Name)
		}
		n.OS = firstNonEmpty(n.OS, d.OS)
		n.Version = firstNonEmpty(n.Version, d.ClientVersion)
		n.User = firstNonEmpty(n.User, d.User)
		if len(n.Tags) == 0 && len(d.Tags) > 0 {
			n.Tags = slices.Clone(d.Tags)
		}
		if len(n.Addresses) == 0 {
			for _, a := range d.Addresses {
				n.Addresses = append(n.Addresses, a.String())
			}
		}
		// The control plane knows best whether a node is connected.
		n.Online = d.Online || len(n.Hosts) > 0
		if d.LastSeen.After(n.LastSeen) {
			n.LastSeen = d.LastSeen
		}
	}
	for _, a := range adapters {
		if a.Error != "" {
			g.Errors = append(g.Errors, "adapter "+a.Name+": "+a.Error)
		}
	}
	for _, n := range nodes {
		g.Nodes = append(g.Nodes, *n)
	}
	sort.Slice(g.Nodes, func(i, j int) bool {
		return g.Nodes[i].Name < g.Nodes[j].Name || g.Nodes[i].Name == g.Nodes[j].Name && g.Nodes[i].ID < g.Nodes[j].ID
	})
	sort.Slice(g.Edges, func(i, j int) bool { return g.Edges[i].ID < g.Edges[j].ID })
	return g
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
