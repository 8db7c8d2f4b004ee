package pod

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// The printers write what the stock tailscale CLI prints for the same
// answers, so that its users read them the same way.

// printStatus prints st as `tailscale status` does: the node itself, then
// its peers sorted by name, with address, owner, OS and path.
func printStatus(w io.Writer, st *ipnstate.Status) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if st.BackendState != "Running" {
		fmt.Fprintf(tw, "# backend state: %s\n", st.BackendState)
	}
	if st.Self != nil {
		printPeer(tw, st, st.Self)
	}
	peers := make([]*ipnstate.PeerStatus, 0, len(st.Peer))
	for _, p := range st.Peer {
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b *ipnstate.PeerStatus) int {
		return cmp.Or(cmp.Compare(peerName(st, a), peerName(st, b)), cmp.Compare(a.ID, b.ID))
	})
	for _, p := range peers {
		printPeer(tw, st, p)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, h := range st.Health {
		fmt.Fprintf(w, "# Health check: %s\n", h)
	}
	return nil
}

// peerName is the MagicDNS name without the tailnet's suffix, or the quoted
// hostname.
func peerName(st *ipnstate.Status, p *ipnstate.PeerStatus) string {
	n := strings.TrimSuffix(p.DNSName, ".")
	suffix := ""
	if st.CurrentTailnet != nil {
		suffix = st.CurrentTailnet.MagicDNSSuffix
	}
	if s := strings.TrimSuffix(suffix, "."); s != "" {
		n = strings.TrimSuffix(n, "."+s)
	}
	if n == "" {
		return fmt.Sprintf("(%q)", p.HostName)
	}
	return n
}

func ownerOf(st *ipnstate.Status, p *ipnstate.PeerStatus) string {
	uid := cmp.Or(p.AltSharerUserID, p.UserID)
	if uid.IsZero() {
		return "-"
	}
	u, ok := st.User[uid]
	if !ok {
		return fmt.Sprint(uid)
	}
	if i := strings.Index(u.LoginName, "@"); i != -1 {
		return u.LoginName[:i+1]
	}
	return u.LoginName
}

func printPeer(w io.Writer, st *ipnstate.Status, p *ipnstate.PeerStatus) {
	ip := "-"
	if len(p.TailscaleIPs) > 0 {
		ip = p.TailscaleIPs[0].String()
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", ip, peerName(st, p), ownerOf(st, p), cmp.Or(p.OS, "-"), pathOf(st, p))
}

// pathOf is the status column: idle, offline, or how traffic flows now.
func pathOf(st *ipnstate.Status, p *ipnstate.PeerStatus) string {
	if st.Self != nil && p.ID == st.Self.ID {
		return "-"
	}
	var b strings.Builder
	traffic := p.TxBytes != 0 || p.RxBytes != 0
	switch {
	case !p.Active && !p.Online:
		b.WriteString("offline")
	case !p.Active && traffic:
		b.WriteString("idle")
	case !p.Active:
		b.WriteString("-")
	case p.CurAddr != "":
		fmt.Fprintf(&b, "active; direct %s", p.CurAddr)
	case p.PeerRelay != "":
		fmt.Fprintf(&b, "active; peer-relay %s", p.PeerRelay)
	case p.Relay != "":
		fmt.Fprintf(&b, "active; relay %q", p.Relay)
	default:
		b.WriteString("active")
	}
	if p.Active && !p.Online {
		b.WriteString("; offline")
	}
	if traffic {
		fmt.Fprintf(&b, ", tx %d rx %d", p.TxBytes, p.RxBytes)
	}
	return b.String()
}

// pongLine is one reply as `tailscale ping` prints it: who answered, over
// which path (an endpoint when direct, DERP(region) when relayed) and how
// long it took.
// TSMP and ICMP pongs do not say which path they took; as tailscale ping
// does, they say which protocol instead.
func pongLine(pr *ipnstate.PingResult, pt tailcfg.PingType) string {
	latency := time.Duration(pr.LatencySeconds * float64(time.Second))
	via := pr.Endpoint
	switch {
	case pr.PeerRelay != "":
		via = fmt.Sprintf("peer-relay(%s)", pr.PeerRelay)
	case pr.DERPRegionID != 0:
		via = fmt.Sprintf("DERP(%s)", pr.DERPRegionCode)
	case via == "":
		via = string(pt)
	}
	return fmt.Sprintf("pong from %s (%s) via %s in %s", pr.NodeName, pr.NodeIP, via, roundLatency(latency))
}

// roundLatency keeps three significant figures: loopback pongs take
// microseconds, which tailscale's whole-millisecond rounding shows as 0s.
func roundLatency(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// printNetcheck prints r as `tailscale netcheck` does, headed by whose view
// it is.
func printNetcheck(w io.Writer, r *adapterv1.NetcheckResponse) {
	who := r.GetTarget()
	if r.GetPodName() != "" {
		who = "pod " + r.GetPodNamespace() + "/" + r.GetPodName()
	}
	if s := r.GetSelf(); s != nil {
		who += fmt.Sprintf(", node %s %v", s.GetHostname(), s.GetTailscaleIps())
	}
	src := "probed by the adapter"
	if r.GetSource() == adapterv1.NetcheckSource_NETCHECK_SOURCE_TARGET {
		src = "the node's own last netcheck"
	}
	fmt.Fprintf(w, "Report (%s; %s):\n", who, src)
	fmt.Fprintf(w, "\t* UDP: %v\n", r.GetUdp())
	if r.GetGlobalV4() != "" {
		fmt.Fprintf(w, "\t* IPv4: yes, %s\n", r.GetGlobalV4())
	} else {
		fmt.Fprintf(w, "\t* IPv4: %s\n", yesNo(r.GetIpv4()))
	}
	switch {
	case r.GetGlobalV6() != "":
		fmt.Fprintf(w, "\t* IPv6: yes, %s\n", r.GetGlobalV6())
	case r.GetIpv6():
		fmt.Fprintf(w, "\t* IPv6: yes\n")
	case r.GetOsHasIpv6():
		fmt.Fprintf(w, "\t* IPv6: no, but OS has support\n")
	default:
		fmt.Fprintf(w, "\t* IPv6: no, unavailable in OS\n")
	}
	fmt.Fprintf(w, "\t* MappingVariesByDestIP: %s\n", cmp.Or(r.GetMappingVariesByDestIp(), "unknown"))
	if eps := r.GetSelf().GetEndpoints(); len(eps) > 0 {
		fmt.Fprintf(w, "\t* Endpoints: %s\n", strings.Join(eps, ", "))
	}
	if r.GetPreferredDerpId() == 0 {
		fmt.Fprintf(w, "\t* Nearest DERP: unknown (no response to latency probes)\n")
	} else {
		fmt.Fprintf(w, "\t* Nearest DERP: %s\n", cmp.Or(r.GetPreferredDerpCode(), fmt.Sprint(r.GetPreferredDerpId())))
	}
	fmt.Fprintf(w, "\t* DERP latency:\n")
	for _, l := range r.GetRegions() {
		fams := []string{}
		if l.GetV4Latency() != nil {
			fams = append(fams, "v4 "+roundLatency(l.GetV4Latency().AsDuration()).String())
		}
		if l.GetV6Latency() != nil {
			fams = append(fams, "v6 "+roundLatency(l.GetV6Latency().AsDuration()).String())
		}
		fmt.Fprintf(w, "\t\t- %s: %s (%s)\n", cmp.Or(l.GetRegionCode(), fmt.Sprint(l.GetRegionId())),
			roundLatency(l.GetLatency().AsDuration()), strings.Join(fams, ", "))
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printWhoIs prints w as `tailscale whois` does.
func printWhoIs(out io.Writer, w *apitype.WhoIsResponse) {
	tw := tabwriter.NewWriter(out, 0, 0, 1, ' ', 0)
	if n := w.Node; n != nil {
		fmt.Fprintf(tw, "Machine:\n")
		fmt.Fprintf(tw, "  Name:\t%s\n", strings.TrimSuffix(n.Name, "."))
		fmt.Fprintf(tw, "  ID:\t%s\n", n.StableID)
		var addrs []string
		for _, a := range n.Addresses {
			addrs = append(addrs, a.String())
		}
		fmt.Fprintf(tw, "  Addresses:\t%s\n", strings.Join(addrs, ", "))
		if len(n.Tags) > 0 {
			fmt.Fprintf(tw, "  Tags:\t%s\n", strings.Join(n.Tags, ", "))
		}
	}
	if u := w.UserProfile; u != nil && (w.Node == nil || len(w.Node.Tags) == 0) {
		fmt.Fprintf(tw, "User:\n")
		fmt.Fprintf(tw, "  Name:\t%s\n", u.LoginName)
		fmt.Fprintf(tw, "  ID:\t%d\n", u.ID)
	}
	if len(w.CapMap) > 0 {
		fmt.Fprintf(tw, "Capabilities:\n")
		caps := make([]string, 0, len(w.CapMap))
		for c := range w.CapMap {
			caps = append(caps, string(c))
		}
		slices.Sort(caps)
		for _, c := range caps {
			fmt.Fprintf(tw, "  - %s\n", c)
		}
	}
	_ = tw.Flush()
}

// isIP reports whether s is an IP address (not a name to look up).
func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
