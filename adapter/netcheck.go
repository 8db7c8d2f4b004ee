package adapter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// A tailscale-cni pod's node is an embedded backend inside the node daemon:
// its magicsock sockets, and so its STUN probes, its NAT mapping and its
// choice of home DERP, live in the daemon's network namespace and belong to
// that backend alone. The pod's own network namespace carries only ts0 to
// the host, so entering it would measure a path the pod's tailnet traffic
// never takes, and the adapter's own probes (in its own namespace, with its
// own sockets) are the node's view, not the pod's. What is the pod's is the
// netcheck its backend ran last, which it reports to the control plane as
// its NetInfo, and which the control plane hands back in the node's own
// netmap entry: ReportedNetcheck reads it from there over the LocalAPI's IPN
// bus, a read-only watch.

// PodOf splits the name of a tailscale-cni pod target, <namespace>_<pod>
// (the daemon's <runDir>/pods/<namespace>_<pod> directory). Kubernetes
// names never hold '_', so the split is unambiguous; ok is false for any
// name that is not two DNS-1123 names joined by one '_'.
func PodOf(name string) (namespace, pod string, ok bool) {
	ns, p, found := strings.Cut(name, "_")
	if !found || !isDNS1123(ns, 63) || !isDNS1123Subdomain(p) {
		return "", "", false
	}
	return ns, p, true
}

// isDNS1123 reports whether s is a DNS-1123 label of at most max bytes:
// lowercase letters, digits and '-', starting and ending alphanumeric.
func isDNS1123(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}

// isDNS1123Subdomain reports whether s is a pod name: dot-separated
// DNS-1123 labels, at most 253 bytes.
func isDNS1123Subdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNS1123(l, 63) {
			return false
		}
	}
	return true
}

// selfReporter is what ReportedNetcheck asks of a daemon: only questions.
type selfReporter interface {
	StatusWithoutPeers(context.Context) (*ipnstate.Status, error)
	WatchIPNBus(context.Context, ipn.NotifyWatchOpt) (*local.IPNBusWatcher, error)
	CurrentDERPMap(context.Context) (*tailcfg.DERPMap, error)
}

var _ selfReporter = (*local.Client)(nil)

// errNoReport says the node has not reported a netcheck (or has no netmap)
// yet; the service maps it to FailedPrecondition.
var errNoReport = errors.New("no netcheck reported yet")

// ReportedNetcheck returns the netcheck d's node ran last, as it reported
// it (source NETCHECK_SOURCE_TARGET), named target and, when target is a
// tailscale-cni pod's name, with its pod. It reads; it starts no probe.
func ReportedNetcheck(ctx context.Context, d selfReporter, target string) (*adapterv1.NetcheckResponse, error) {
	t0 := time.Now()
	st, err := d.StatusWithoutPeers(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	self, err := selfNode(ctx, d)
	if err != nil {
		return nil, err
	}
	dm, err := d.CurrentDERPMap(ctx)
	if err != nil {
		return nil, fmt.Errorf("DERP map: %w", err)
	}
	r, err := reportedNetcheckResponse(target, self, dm)
	if err != nil {
		return nil, err
	}
	r.Self = nodeFromPeer(st.Self, st.User)
	r.Time, r.Took = ts(time.Now()), dur(time.Since(t0))
	return r, nil
}

// selfNode is the node's own entry in its current netmap, as the control
// plane sent it: its Hostinfo carries the NetInfo the node last reported.
// The watch is closed as soon as the initial netmap is in.
func selfNode(ctx context.Context, d selfReporter) (tailcfg.NodeView, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w, err := d.WatchIPNBus(ctx, ipn.NotifyInitialNetMap|ipn.NotifyNoPrivateKeys)
	if err != nil {
		return tailcfg.NodeView{}, fmt.Errorf("watching the IPN bus: %w", err)
	}
	defer w.Close()
	for {
		n, err := w.Next()
		if err != nil {
			if ctx.Err() != nil {
				return tailcfg.NodeView{}, fmt.Errorf("%w: the node has no netmap (not logged in?)", errNoReport)
			}
			return tailcfg.NodeView{}, fmt.Errorf("reading the IPN bus: %w", err)
		}
		// The initial netmap is still sent on every platform; only the
		// runtime ones are going (the client of v1.102 has no NetMap
		// call yet), and Self in InitialStatus carries no Hostinfo.
		if nm := n.NetMap; nm != nil { //nolint:staticcheck // see above
			return nm.SelfNode, nil
		}
	}
}

// reportedNetcheckResponse converts self's reported NetInfo. What NetInfo
// does not carry stays unset: the public addresses (self's endpoints list
// them with the local ones, unlabelled), captive-portal detection and
// whether IPv4 could send (true when a v4 STUN reply came back, since the
// probe was sent).
func reportedNetcheckResponse(target string, self tailcfg.NodeView, dm *tailcfg.DERPMap) (*adapterv1.NetcheckResponse, error) {
	if !self.Valid() || !self.Hostinfo().Valid() || !self.Hostinfo().NetInfo().Valid() {
		return nil, fmt.Errorf("target %q: %w", target, errNoReport)
	}
	ni := self.Hostinfo().NetInfo().AsStruct()
	r := &adapterv1.NetcheckResponse{
		Target:                target,
		Source:                adapterv1.NetcheckSource_NETCHECK_SOURCE_TARGET,
		Udp:                   ni.WorkingUDP.EqualBool(true),
		Ipv6:                  ni.WorkingIPv6.EqualBool(true),
		Ipv6CanSend:           ni.WorkingIPv6.EqualBool(true),
		OsHasIpv6:             ni.OSHasIPv6.EqualBool(true),
		MappingVariesByDestIp: string(ni.MappingVariesByDestIP),
		PreferredDerpId:       int32(ni.PreferredDERP),
	}
	if r.PreferredDerpId == 0 {
		r.PreferredDerpId = int32(self.HomeDERP())
	}
	r.PodNamespace, r.PodName, _ = PodOf(target)
	code := func(id int) string {
		if dm != nil && dm.Regions[id] != nil {
			return dm.Regions[id].RegionCode
		}
		return ""
	}
	r.PreferredDerpCode = code(int(r.PreferredDerpId))
	byID := map[int]*adapterv1.RegionLatency{}
	for k, secs := range ni.DERPLatency {
		id, fam, err := parseDERPLatencyKey(k)
		if err != nil || secs < 0 || math.IsNaN(secs) || math.IsInf(secs, 0) {
			continue // a key this version does not know; skip, don't fail
		}
		rl := byID[id]
		if rl == nil {
			rl = &adapterv1.RegionLatency{RegionId: int32(id), RegionCode: code(id)}
			byID[id] = rl
		}
		d := dur(time.Duration(secs * float64(time.Second)))
		if fam == 4 {
			rl.V4Latency = d
			r.Ipv4, r.Ipv4CanSend = true, true
		} else {
			rl.V6Latency = d
		}
		// The region's latency is the best of its families, as netcheck's.
		if rl.Latency == nil || d.AsDuration() < rl.Latency.AsDuration() {
			rl.Latency = d
		}
	}
	for _, rl := range byID {
		r.Regions = append(r.Regions, rl)
	}
	sort.Slice(r.Regions, func(i, j int) bool {
		a, b := r.Regions[i], r.Regions[j]
		if a.Latency.AsDuration() != b.Latency.AsDuration() {
			return a.Latency.AsDuration() < b.Latency.AsDuration()
		}
		return a.RegionId < b.RegionId
	})
	return r, nil
}

// parseDERPLatencyKey parses a NetInfo.DERPLatency key, "<region ID>-v4" or
// "<region ID>-v6", into the region and the IP family (4 or 6).
func parseDERPLatencyKey(k string) (region, family int, err error) {
	id, fam, ok := strings.Cut(k, "-")
	if !ok {
		return 0, 0, fmt.Errorf("DERP latency key %q: want <region>-v4 or <region>-v6", k)
	}
	switch fam {
	case "v4":
		family = 4
	case "v6":
		family = 6
	default:
		return 0, 0, fmt.Errorf("DERP latency key %q: family %q is neither v4 nor v6", k, fam)
	}
	region, err = strconv.Atoi(id)
	if err != nil || region <= 0 || id != strconv.Itoa(region) {
		return 0, 0, fmt.Errorf("DERP latency key %q: region %q is not a positive integer", k, id)
	}
	return region, family, nil
}
