package adapter

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/net/netcheck"
	"tailscale.com/tailcfg"
	"tailscale.com/types/dnstype"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// These functions copy the fields the API promises, one by one: anything
// not copied (keys, persisted login, internal state) cannot leak.

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func dur(d time.Duration) *durationpb.Duration {
	return durationpb.New(d)
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func nodeFromPeer(p *ipnstate.PeerStatus, users map[tailcfg.UserID]tailcfg.UserProfile) *adapterv1.Node {
	if p == nil {
		return nil
	}
	n := &adapterv1.Node{
		Id:             string(p.ID),
		Hostname:       p.HostName,
		DnsName:        p.DNSName,
		Os:             p.OS,
		TailscaleIps:   addrStrings(p.TailscaleIPs),
		Online:         p.Online,
		Active:         p.Active,
		Endpoints:      slices.Clone(p.Addrs),
		CurrentAddress: p.CurAddr,
		DerpRegion:     p.Relay,
		PeerRelay:      p.PeerRelay,
		RxBytes:        p.RxBytes,
		TxBytes:        p.TxBytes,
		LastHandshake:  ts(p.LastHandshake),
		LastWrite:      ts(p.LastWrite),
		LastSeen:       ts(p.LastSeen),
		Created:        ts(p.Created),
		Expired:        p.Expired,
		ExitNode:       p.ExitNode,
		ExitNodeOption: p.ExitNodeOption,
		PeerApiUrls:    slices.Clone(p.PeerAPIURL),
	}
	if p.KeyExpiry != nil {
		n.KeyExpiry = ts(*p.KeyExpiry)
	}
	if p.Tags != nil {
		n.Tags = p.Tags.AsSlice()
	}
	if p.PrimaryRoutes != nil {
		for _, r := range p.PrimaryRoutes.All() {
			n.PrimaryRoutes = append(n.PrimaryRoutes, r.String())
		}
	}
	if p.AllowedIPs != nil {
		for _, r := range p.AllowedIPs.All() {
			n.AllowedIps = append(n.AllowedIps, r.String())
		}
	}
	if len(n.Tags) == 0 {
		if u, ok := users[p.UserID]; ok {
			n.User = u.LoginName
		}
	}
	return n
}

func statusResponse(target string, st *ipnstate.Status) *adapterv1.StatusResponse {
	r := &adapterv1.StatusResponse{
		Target:       target,
		Version:      st.Version,
		BackendState: st.BackendState,
		Tun:          st.TUN,
		Self:         nodeFromPeer(st.Self, st.User),
		Health:       slices.Clone(st.Health),
	}
	if st.CurrentTailnet != nil {
		r.TailnetName = st.CurrentTailnet.Name
		r.MagicDnsSuffix = st.CurrentTailnet.MagicDNSSuffix
	}
	for _, p := range st.Peer {
		r.Peers = append(r.Peers, nodeFromPeer(p, st.User))
	}
	sort.Slice(r.Peers, func(i, j int) bool {
		a, b := r.Peers[i], r.Peers[j]
		return cmp.Or(cmp.Compare(a.Hostname, b.Hostname), cmp.Compare(a.Id, b.Id)) < 0
	})
	return r
}

// pingResult converts one LocalAPI ping result. Disco pings report their
// path; for the others the caller fills it from status.
func pingResult(seq int, pr *ipnstate.PingResult) *adapterv1.PingResult {
	r := &adapterv1.PingResult{
		Seq:            int32(seq),
		Error:          pr.Err,
		Endpoint:       pr.Endpoint,
		DerpRegionId:   int32(pr.DERPRegionID),
		DerpRegionCode: pr.DERPRegionCode,
		PeerRelay:      pr.PeerRelay,
		PeerApiUrl:     pr.PeerAPIURL,
		NodeIp:         pr.NodeIP,
		NodeName:       pr.NodeName,
	}
	if pr.Err == "" {
		r.Latency = dur(time.Duration(pr.LatencySeconds * float64(time.Second)))
	}
	r.Path = pathKind(pr.IsLocalIP, pr.Endpoint, pr.PeerRelay, pr.DERPRegionID != 0 || pr.DERPRegionCode != "")
	return r
}

func pathKind(local bool, endpoint, peerRelay string, derp bool) adapterv1.PathKind {
	switch {
	case local:
		return adapterv1.PathKind_PATH_KIND_LOCAL
	case endpoint != "":
		return adapterv1.PathKind_PATH_KIND_DIRECT
	case peerRelay != "":
		return adapterv1.PathKind_PATH_KIND_PEER_RELAY
	case derp:
		return adapterv1.PathKind_PATH_KIND_DERP
	}
	return adapterv1.PathKind_PATH_KIND_UNSPECIFIED
}

// fillPathFromStatus sets r's path from the peer's current status, for ping
// types whose result does not say how the packet travelled.
func fillPathFromStatus(r *adapterv1.PingResult, p *ipnstate.PeerStatus, dm *tailcfg.DERPMap) {
	if r.Path != adapterv1.PathKind_PATH_KIND_UNSPECIFIED || p == nil || r.Error != "" {
		return
	}
	r.PathFromStatus = true
	r.Endpoint = p.CurAddr
	r.PeerRelay = p.PeerRelay
	if p.CurAddr == "" && p.PeerRelay == "" && p.Relay != "" {
		r.DerpRegionCode = p.Relay
		if dm != nil {
			for id, reg := range dm.Regions {
				if reg != nil && reg.RegionCode == p.Relay {
					r.DerpRegionId = int32(id)
				}
			}
		}
	}
	r.Path = pathKind(false, r.Endpoint, r.PeerRelay, r.DerpRegionCode != "")
}

func resolvers(rs []*dnstype.Resolver) []*adapterv1.DNSResolver {
	var out []*adapterv1.DNSResolver
	for _, r := range rs {
		if r == nil {
			continue
		}
		out = append(out, &adapterv1.DNSResolver{Addr: r.Addr, Bootstrap: addrStrings(r.BootstrapResolution)})
	}
	return out
}

// dnsTypes are the record types QueryDNS accepts.
var dnsTypes = map[string]dnsmessage.Type{
	"A": dnsmessage.TypeA, "AAAA": dnsmessage.TypeAAAA, "CNAME": dnsmessage.TypeCNAME,
	"MX": dnsmessage.TypeMX, "NS": dnsmessage.TypeNS, "PTR": dnsmessage.TypePTR,
	"SOA": dnsmessage.TypeSOA, "SRV": dnsmessage.TypeSRV, "TXT": dnsmessage.TypeTXT,
}

func dnsTypeNames() string {
	var ns []string
	for k := range dnsTypes {
		ns = append(ns, k)
	}
	sort.Strings(ns)
	return strings.Join(ns, ", ")
}

func typeName(t dnsmessage.Type) string {
	return strings.TrimPrefix(t.String(), "Type")
}

// rcodeNames are the IANA mnemonics (RFC 6895) that dig and every DNS
// operator know; dnsmessage's own names ("RCodeSuccess") are Go's.
var rcodeNames = map[dnsmessage.RCode]string{
	dnsmessage.RCodeSuccess:        "NOERROR",
	dnsmessage.RCodeFormatError:    "FORMERR",
	dnsmessage.RCodeServerFailure:  "SERVFAIL",
	dnsmessage.RCodeNameError:      "NXDOMAIN",
	dnsmessage.RCodeNotImplemented: "NOTIMP",
	dnsmessage.RCodeRefused:        "REFUSED",
	6:                              "YXDOMAIN",
	7:                              "YXRRSET",
	8:                              "NXRRSET",
	9:                              "NOTAUTH",
	10:                             "NOTZONE",
}

// rcodeName names a response code the way the proto documents it.
func rcodeName(c dnsmessage.RCode) string {
	if n, ok := rcodeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("RCODE%d", c)
}

// parseDNSResponse decodes a raw DNS response into answers in presentation
// form. Record types it does not model are shown by type only.
func parseDNSResponse(raw []byte) (rcode string, answers []*adapterv1.DNSAnswer, err error) {
	var p dnsmessage.Parser
	h, err := p.Start(raw)
	if err != nil {
		return "", nil, fmt.Errorf("parsing DNS response: %w", err)
	}
	rcode = rcodeName(h.RCode)
	if err := p.SkipAllQuestions(); err != nil {
		return rcode, nil, fmt.Errorf("parsing DNS response: %w", err)
	}
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return rcode, answers, fmt.Errorf("parsing DNS answer: %w", err)
		}
		a := &adapterv1.DNSAnswer{Name: rh.Name.String(), Type: typeName(rh.Type), Ttl: rh.TTL}
		body, err := p.UnknownResource()
		if err != nil {
			return rcode, answers, fmt.Errorf("parsing DNS answer: %w", err)
		}
		a.Data = rdataString(rh.Type, body, raw)
		answers = append(answers, a)
	}
	return rcode, answers, nil
}

// rdataString renders a record's data. Names inside records may be
// compressed against the whole message, so it re-parses from raw when
// needed; on failure it falls back to a length.
func rdataString(t dnsmessage.Type, u dnsmessage.UnknownResource, raw []byte) string {
	d := u.Data
	switch t {
	case dnsmessage.TypeA:
		if len(d) == 4 {
			return netip.AddrFrom4([4]byte(d)).String()
		}
	case dnsmessage.TypeAAAA:
		if len(d) == 16 {
			return netip.AddrFrom16([16]byte(d)).String()
		}
	case dnsmessage.TypeTXT:
		var parts []string
		for len(d) > 0 {
			n := int(d[0])
			if 1+n > len(d) {
				break
			}
			parts = append(parts, fmt.Sprintf("%q", d[1:1+n]))
			d = d[1+n:]
		}
		return strings.Join(parts, " ")
	}
	if s, ok := typedRData(t, raw); ok {
		return s
	}
	return fmt.Sprintf("(%d bytes)", len(u.Data))
}

// typedRData renders name-carrying records by re-parsing the message with
// the typed parsers (which resolve compression). It returns the first answer
// of type t, which is right for the common one-answer case.
func typedRData(t dnsmessage.Type, raw []byte) (string, bool) {
	var m dnsmessage.Message
	if err := m.Unpack(raw); err != nil {
		return "", false
	}
	for _, a := range m.Answers {
		if a.Header.Type != t {
			continue
		}
		switch b := a.Body.(type) {
		case *dnsmessage.CNAMEResource:
			return b.CNAME.String(), true
		case *dnsmessage.NSResource:
			return b.NS.String(), true
		case *dnsmessage.PTRResource:
			return b.PTR.String(), true
		case *dnsmessage.MXResource:
			return fmt.Sprintf("%d %s", b.Pref, b.MX), true
		case *dnsmessage.SRVResource:
			return fmt.Sprintf("%d %d %d %s", b.Priority, b.Weight, b.Port, b.Target), true
		case *dnsmessage.SOAResource:
			return fmt.Sprintf("%s %s %d %d %d %d %d", b.NS, b.MBox, b.Serial, b.Refresh, b.Retry, b.Expire, b.MinTTL), true
		}
	}
	return "", false
}

func prefsResponse(target string, p *ipn.Prefs) *adapterv1.PrefsResponse {
	r := &adapterv1.PrefsResponse{
		Target:                 target,
		ControlUrl:             p.ControlURL,
		RouteAll:               p.RouteAll,
		ExitNodeId:             string(p.ExitNodeID),
		ExitNodeAllowLanAccess: p.ExitNodeAllowLANAccess,
		CorpDns:                p.CorpDNS,
		RunSsh:                 p.RunSSH,
		RunWebClient:           p.RunWebClient,
		WantRunning:            p.WantRunning,
		LoggedOut:              p.LoggedOut,
		ShieldsUp:              p.ShieldsUp,
		AdvertiseTags:          slices.Clone(p.AdvertiseTags),
		Hostname:               p.Hostname,
		NoSnat:                 p.NoSNAT,
		NoStatefulFiltering:    p.NoStatefulFiltering.EqualBool(true),
		NetfilterMode:          p.NetfilterMode.String(),
		OperatorUser:           p.OperatorUser,
		ProfileName:            p.ProfileName,
		AutoUpdateCheck:        p.AutoUpdate.Check,
		PostureChecking:        p.PostureChecking,
		AdvertiseServices:      slices.Clone(p.AdvertiseServices),
	}
	if p.ExitNodeIP.IsValid() {
		r.ExitNodeIp = p.ExitNodeIP.String()
	}
	for _, rt := range p.AdvertiseRoutes {
		r.AdvertiseRoutes = append(r.AdvertiseRoutes, rt.String())
	}
	if p.Persist != nil {
		r.LoginName = p.Persist.UserProfile.LoginName
		r.NodeId = string(p.Persist.NodeID)
	}
	return r
}

func dnsConfigResponse(target string, c *tailcfg.DNSConfig, acceptDNS bool, osc *apitype.DNSOSConfig, osErr error) *adapterv1.DNSConfigResponse {
	r := &adapterv1.DNSConfigResponse{Target: target, AcceptDns: acceptDNS}
	if c != nil {
		r.Resolvers = resolvers(c.Resolvers)
		r.FallbackResolvers = resolvers(c.FallbackResolvers)
		r.Domains = slices.Clone(c.Domains)
		r.MagicDns = c.Proxied
		r.CertDomains = slices.Clone(c.CertDomains)
		for suffix, rs := range c.Routes {
			r.Routes = append(r.Routes, &adapterv1.DNSRoute{Suffix: suffix, Resolvers: resolvers(rs)})
		}
		sort.Slice(r.Routes, func(i, j int) bool { return r.Routes[i].Suffix < r.Routes[j].Suffix })
		for _, e := range c.ExtraRecords {
			r.ExtraRecords = append(r.ExtraRecords, &adapterv1.DNSRecord{Name: e.Name, Type: e.Type, Value: e.Value})
		}
	}
	if osc != nil {
		r.OsNameservers = slices.Clone(osc.Nameservers)
		r.OsSearchDomains = slices.Clone(osc.SearchDomains)
		r.OsMatchDomains = slices.Clone(osc.MatchDomains)
	}
	if osErr != nil {
		r.OsError = osErr.Error()
	}
	return r
}

func serveConfigResponse(target string, c *ipn.ServeConfig) (*adapterv1.ServeConfigResponse, error) {
	r := &adapterv1.ServeConfigResponse{Target: target}
	if c == nil {
		r.Json = "{}"
		return r, nil
	}
	for port, h := range c.TCP {
		if h == nil {
			continue
		}
		r.Tcp = append(r.Tcp, &adapterv1.ServeTCPPort{Port: uint32(port), Https: h.HTTPS, Http: h.HTTP, TcpForward: h.TCPForward, TerminateTls: h.TerminateTLS})
	}
	sort.Slice(r.Tcp, func(i, j int) bool { return r.Tcp[i].Port < r.Tcp[j].Port })
	for hp, w := range c.Web {
		if w == nil {
			continue
		}
		for mount, h := range w.Handlers {
			if h == nil {
				continue
			}
			r.Web = append(r.Web, &adapterv1.ServeWebHandler{HostPort: string(hp), Path: mount, Proxy: h.Proxy, PathTarget: h.Path, Text: h.Text != ""})
		}
	}
	sort.Slice(r.Web, func(i, j int) bool {
		return cmp.Or(cmp.Compare(r.Web[i].HostPort, r.Web[j].HostPort), cmp.Compare(r.Web[i].Path, r.Web[j].Path)) < 0
	})
	for hp, on := range c.AllowFunnel {
		if on {
			r.Funnel = append(r.Funnel, string(hp))
		}
	}
	sort.Strings(r.Funnel)
	j, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	r.Json = string(j)
	return r, nil
}

func netcheckResponse(target string, rep *netcheck.Report, dm *tailcfg.DERPMap, took time.Duration) *adapterv1.NetcheckResponse {
	r := &adapterv1.NetcheckResponse{
		Target:                target,
		Udp:                   rep.UDP,
		Ipv4:                  rep.IPv4,
		Ipv6:                  rep.IPv6,
		Ipv4CanSend:           rep.IPv4CanSend,
		Ipv6CanSend:           rep.IPv6CanSend,
		OsHasIpv6:             rep.OSHasIPv6,
		MappingVariesByDestIp: string(rep.MappingVariesByDestIP),
		CaptivePortal:         string(rep.CaptivePortal),
		PreferredDerpId:       int32(rep.PreferredDERP),
		Time:                  ts(rep.Now),
		Took:                  dur(took),
	}
	if rep.GlobalV4.IsValid() {
		r.GlobalV4 = rep.GlobalV4.String()
	}
	if rep.GlobalV6.IsValid() {
		r.GlobalV6 = rep.GlobalV6.String()
	}
	code := func(id int) string {
		if dm != nil && dm.Regions[id] != nil {
			return dm.Regions[id].RegionCode
		}
		return ""
	}
	r.PreferredDerpCode = code(rep.PreferredDERP)
	for id, l := range rep.RegionLatency {
		rl := &adapterv1.RegionLatency{RegionId: int32(id), RegionCode: code(id), Latency: dur(l)}
		if v, ok := rep.RegionV4Latency[id]; ok {
			rl.V4Latency = dur(v)
		}
		if v, ok := rep.RegionV6Latency[id]; ok {
			rl.V6Latency = dur(v)
		}
		r.Regions = append(r.Regions, rl)
	}
	sort.Slice(r.Regions, func(i, j int) bool {
		return r.Regions[i].Latency.AsDuration() < r.Regions[j].Latency.AsDuration()
	})
	return r
}

func whoIsResponse(target string, w *apitype.WhoIsResponse) *adapterv1.WhoIsResponse {
	r := &adapterv1.WhoIsResponse{Target: target}
	if n := w.Node; n != nil {
		node := &adapterv1.Node{
			Id:      string(n.StableID),
			DnsName: n.Name,
			Tags:    slices.Clone(n.Tags),
			Online:  n.Online != nil && *n.Online,
			Created: ts(n.Created),
			Expired: n.Expired,
		}
		// A node the daemon knows only from control may carry no Hostinfo.
		if n.Hostinfo.Valid() {
			node.Hostname, node.Os = n.Hostinfo.Hostname(), n.Hostinfo.OS()
		}
		for _, a := range n.Addresses {
			if a.IsSingleIP() {
				node.TailscaleIps = append(node.TailscaleIps, a.Addr().String())
			}
		}
		if !n.KeyExpiry.IsZero() {
			node.KeyExpiry = ts(n.KeyExpiry)
		}
		r.Node = node
	}
	if u := w.UserProfile; u != nil {
		r.UserLoginName = u.LoginName
		r.UserDisplayName = u.DisplayName
		if r.Node != nil && len(r.Node.Tags) == 0 {
			r.Node.User = u.LoginName
		}
	}
	for c := range w.CapMap {
		r.Capabilities = append(r.Capabilities, string(c))
	}
	sort.Strings(r.Capabilities)
	return r
}

func derpMapResponse(target string, dm *tailcfg.DERPMap) *adapterv1.DERPMapResponse {
	r := &adapterv1.DERPMapResponse{Target: target}
	if dm == nil {
		return r
	}
	r.OmitDefaultRegions = dm.OmitDefaultRegions
	for id, reg := range dm.Regions {
		if reg == nil {
			continue
		}
		rr := &adapterv1.DERPRegion{
			RegionId: int32(id), RegionCode: reg.RegionCode, RegionName: reg.RegionName,
			Avoid:           reg.Avoid, //nolint:staticcheck // deprecated, but still what the daemon was told
			NoMeasureNoHome: reg.NoMeasureNoHome,
		}
		for _, n := range reg.Nodes {
			if n == nil {
				continue
			}
			rr.Nodes = append(rr.Nodes, &adapterv1.DERPNode{
				Name: n.Name, HostName: n.HostName, Ipv4: n.IPv4, Ipv6: n.IPv6,
				DerpPort: int32(n.DERPPort), StunPort: int32(n.STUNPort), StunOnly: n.STUNOnly, CanPort_80: n.CanPort80,
			})
		}
		r.Regions = append(r.Regions, rr)
	}
	sort.Slice(r.Regions, func(i, j int) bool { return r.Regions[i].RegionId < r.Regions[j].RegionId })
	return r
}
