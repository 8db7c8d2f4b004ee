package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"tailscale.com/types/logger"
)

// Pod is one attachment's kernel objects.
type Pod struct {
	Names
	Table int
	NetNS string // path of the pod's netns
}

// PodFor returns the Pod for a container ID and its table.
func PodFor(containerID, netnsPath string, table int) Pod {
	return Pod{Names: NamesFor(containerID), Table: table, NetNS: netnsPath}
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

var defaultV4 = netip.MustParsePrefix("0.0.0.0/0")
var defaultV6 = netip.MustParsePrefix("::/0")

// staticRoutes are the routes of a pod's table that do not depend on the
// backend: everything unreachable, so that a packet from the pod or from the
// TUN that no more specific route claims is dropped instead of leaving
// through the host's default route. (wireguard-go writes a probe packet into
// the TUN at start-up; without these it escaped to the host's uplink.)
func staticRoutes(table int) []netlink.Route {
	var rs []netlink.Route
	for _, p := range []netip.Prefix{defaultV4, TailnetV4, defaultV6, TailnetV6} {
		rs = append(rs, netlink.Route{Dst: ipnet(p), Table: table, Type: unix.RTN_UNREACHABLE, Family: family(p.Addr())})
	}
	return rs
}

// PrepareHost installs the pod's rules and the static part of its table. The
// rules send everything that arrives from the pod's veth or from its TUN to
// the pod's table. It is idempotent.
func PrepareHost(p Pod) error {
	for _, r := range staticRoutes(p.Table) {
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("adding unreachable %v to table %d: %w", r.Dst, p.Table, err)
		}
	}
	existing, err := ownRules(p.Table)
	if err != nil {
		return err
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		for _, iif := range []string{p.HostVeth, p.TUN} {
			if slices.ContainsFunc(existing, func(r netlink.Rule) bool { return r.Family == fam && r.IifName == iif }) {
				continue
			}
			r := netlink.NewRule()
			r.Family, r.Priority, r.Table, r.IifName = fam, RulePriority, p.Table, iif
			if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("adding rule iif %s lookup %d: %w", iif, p.Table, err)
			}
		}
	}
	return nil
}

// ownRules lists the rules at RulePriority; table 0 means all of them.
func ownRules(table int) ([]netlink.Rule, error) {
	var out []netlink.Rule
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := netlink.RuleList(fam)
		if err != nil {
			return nil, fmt.Errorf("listing rules: %w", err)
		}
		for _, r := range rules {
			if r.Priority == RulePriority && (table == 0 || r.Table == table) {
				r.Family = fam
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// SetTUNUp brings the TUN up and turns off reverse-path filtering on it:
// packets from the tailnet carry peer sources that only the pod's table,
// not the main table, routes back into the TUN.
func SetTUNUp(p Pod) error {
	l, err := netlink.LinkByName(p.TUN)
	if err != nil {
		return fmt.Errorf("finding TUN %s: %w", p.TUN, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing up TUN %s: %w", p.TUN, err)
	}
	return disableRPFilter(p.TUN)
}

// procSysNet is where the net sysctls of the host's network namespace are
// written: /proc/sys/net, unless SetProcSysNet moved it.
var procSysNet = "/proc/sys/net"

// SetProcSysNet makes the package write the host's net sysctls under dir
// instead of /proc/sys/net: a container's own /proc/sys is read-only unless
// it is privileged, so the chart mounts the node's /proc/sys/net elsewhere.
// Call it before any other function of the package, from one goroutine.
func SetProcSysNet(dir string) { procSysNet = dir }

func disableRPFilter(dev string) error {
	path := filepath.Join(procSysNet, "ipv4/conf", dev, "rp_filter")
	if err := os.WriteFile(path, []byte("0"), 0o644); err != nil {
		return fmt.Errorf("turning off rp_filter on %s: %w", dev, err)
	}
	return nil
}

// SetTUNRoutes makes the routes through the TUN in the pod's table exactly
// routes: the backend's peers (one /32 or /128 each) and 100.100.100.100.
// The static unreachable routes stay.
func SetTUNRoutes(p Pod, routes []netip.Prefix) error {
	tun, err := netlink.LinkByName(p.TUN)
	if err != nil {
		return fmt.Errorf("finding TUN %s: %w", p.TUN, err)
	}
	idx := tun.Attrs().Index
	have := map[netip.Prefix]netlink.Route{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: p.Table, LinkIndex: idx}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
		if err != nil {
			return fmt.Errorf("listing table %d: %w", p.Table, err)
		}
		for _, r := range rs {
			if pfx, ok := prefixOf(r.Dst); ok {
				have[pfx] = r
			}
		}
	}
	want := map[netip.Prefix]bool{}
	var errs []error
	for _, pfx := range routes {
		pfx = pfx.Masked()
		want[pfx] = true
		if _, ok := have[pfx]; ok {
			continue
		}
		r := netlink.Route{Dst: ipnet(pfx), LinkIndex: idx, Table: p.Table, Scope: netlink.SCOPE_LINK, Family: family(pfx.Addr())}
		if err := netlink.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("adding %v via %s: %w", pfx, p.TUN, err))
		}
	}
	for pfx, r := range have {
		if !want[pfx] {
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("removing %v via %s: %w", pfx, p.TUN, err))
			}
		}
	}
	return errors.Join(errs...)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// AttachPod creates the veth pair (pod end ts0) if needed and gives ts0 the
// pod's tailnet addresses and routes. It returns the addresses ts0 holds:
// IPv6 is dropped, not fatal, when the pod's netns has IPv6 turned off.
func AttachPod(logf logger.Logf, p Pod, addrs []netip.Prefix) ([]netip.Prefix, error) {
	netns, err := ns.GetNS(p.NetNS)
	if err != nil {
		return nil, fmt.Errorf("opening netns %s: %w", p.NetNS, err)
	}
	defer netns.Close()

	host, err := netlink.LinkByName(p.HostVeth)
	if err == nil {
		// A leftover from an ADD that failed half way, or a recovery: the
		// pod end may be wrong, so start over.
		if err := netlink.LinkDel(host); err != nil {
			return nil, fmt.Errorf("removing stale %s: %w", p.HostVeth, err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.HostVeth, MTU: MTU},
		PeerName:      PodIfName,
		PeerNamespace: netlink.NsFd(int(netns.Fd())),
		PeerMTU:       MTU,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating veth %s/%s: %s already exists in the pod's netns (another plugin owns it?): %w", p.HostVeth, PodIfName, PodIfName, err)
		}
		return nil, fmt.Errorf("creating veth %s/%s: %w", p.HostVeth, PodIfName, err)
	}
	host, err = netlink.LinkByName(p.HostVeth)
	if err != nil {
		return nil, fmt.Errorf("finding %s: %w", p.HostVeth, err)
	}
	if err := disableRPFilter(p.HostVeth); err != nil {
		return nil, err
	}
	hostMAC := host.Attrs().HardwareAddr

	var podMAC net.HardwareAddr
	var got []netip.Prefix
	// ns.Do runs the closure on a goroutine locked to its own OS thread and
	// switches only that thread into the pod's netns: a netns belongs to a
	// thread, not to the process, and the Go scheduler would otherwise move
	// other goroutines onto it (or this one off it) mid-change.
	err = netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(PodIfName)
		if err != nil {
			return fmt.Errorf("finding %s in pod: %w", PodIfName, err)
		}
		podMAC = l.Attrs().HardwareAddr
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("bringing up %s: %w", PodIfName, err)
		}
		for _, a := range HostAddrs(addrs) {
			addr := &netlink.Addr{IPNet: ipnet(a)}
			if a.Addr().Is6() {
				// The address is unique by construction; waiting for
				// duplicate detection would only delay the pod.
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrReplace(l, addr); err != nil {
				if a.Addr().Is6() {
					logf("pod netns %s refuses IPv6 on %s (%v); IPv4 only", p.NetNS, PodIfName, err)
					continue
				}
				return fmt.Errorf("adding %v to %s: %w", a, PodIfName, err)
			}
			got = append(got, a)
		}
		for _, a := range got {
			gw := GatewayV4
			if a.Addr().Is6() {
				gw = GatewayV6
			}
			n := &netlink.Neigh{LinkIndex: l.Attrs().Index, IP: gw.AsSlice(), HardwareAddr: hostMAC, State: netlink.NUD_PERMANENT, Family: family(gw)}
			if err := netlink.NeighSet(n); err != nil {
				return fmt.Errorf("adding neighbour %v on %s: %w", gw, PodIfName, err)
			}
			dst := TailnetV4
			if a.Addr().Is6() {
				dst = TailnetV6
			}
			r := &netlink.Route{
				Dst: ipnet(dst), Gw: gw.AsSlice(), Src: a.Addr().AsSlice(),
				LinkIndex: l.Attrs().Index, Flags: int(netlink.FLAG_ONLINK), Family: family(gw),
			}
			if err := netlink.RouteReplace(r); err != nil {
				return fmt.Errorf("adding route %v via %v dev %s: %w", dst, gw, PodIfName, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("bringing up %s: %w", p.HostVeth, err)
	}
	for _, a := range got {
		r := &netlink.Route{Dst: ipnet(a), LinkIndex: host.Attrs().Index, Table: p.Table, Scope: netlink.SCOPE_LINK, Family: family(a.Addr())}
		if err := netlink.RouteReplace(r); err != nil {
			return nil, fmt.Errorf("adding %v dev %s to table %d: %w", a, p.HostVeth, p.Table, err)
		}
		n := &netlink.Neigh{LinkIndex: host.Attrs().Index, IP: a.Addr().AsSlice(), HardwareAddr: podMAC, State: netlink.NUD_PERMANENT, Family: family(a.Addr())}
		if err := netlink.NeighSet(n); err != nil {
			return nil, fmt.Errorf("adding neighbour %v on %s: %w", a.Addr(), p.HostVeth, err)
		}
	}
	return got, nil
}

// PodMAC returns ts0's hardware address, for the CNI result.
func PodMAC(p Pod) (string, error) {
	var mac string
	err := ns.WithNetNSPath(p.NetNS, func(ns.NetNS) error {
		l, err := netlink.LinkByName(PodIfName)
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr.String()
		return nil
	})
	return mac, err
}

// Check verifies that ts0 is up in the pod with every address in addrs, and
// that the host end and the pod's rules are there.
func Check(p Pod, addrs []netip.Prefix) error {
	if _, err := netlink.LinkByName(p.HostVeth); err != nil {
		return fmt.Errorf("host end %s: %w", p.HostVeth, err)
	}
	rules, err := ownRules(p.Table)
	if err != nil {
		return err
	}
	if len(rules) < 2 {
		return fmt.Errorf("rules for table %d missing (found %d)", p.Table, len(rules))
	}
	// See AttachPod for why this runs in ns.Do.
	return ns.WithNetNSPath(p.NetNS, func(ns.NetNS) error {
		l, err := netlink.LinkByName(PodIfName)
		if err != nil {
			return fmt.Errorf("%s in pod: %w", PodIfName, err)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("%s in pod is down", PodIfName)
		}
		have, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("listing %s addresses: %w", PodIfName, err)
		}
		for _, want := range addrs {
			if !slices.ContainsFunc(have, func(a netlink.Addr) bool {
				p, ok := prefixOf(a.IPNet)
				return ok && p.Addr() == want.Addr()
			}) {
				return fmt.Errorf("%s in pod lacks %v", PodIfName, want.Addr())
			}
		}
		return nil
	})
}

// Teardown removes the pod's links, rules and table. Missing pieces are not
// errors: DEL must succeed however far ADD got, and when run twice.
func Teardown(p Pod) error {
	var errs []error
	for _, name := range []string{p.HostVeth, p.TUN} {
		if err := delLink(name); err != nil {
			errs = append(errs, err)
		}
	}
	// Rules are found by table and by interface name, so that a DEL for a
	// container whose table the daemon lost still removes them.
	tables := map[int]bool{p.Table: true}
	if rules, err := ownRules(0); err == nil {
		for _, r := range rules {
			if r.IifName == p.HostVeth || r.IifName == p.TUN {
				tables[r.Table] = true
			}
		}
	}
	if err := delRules(func(r netlink.Rule) bool { return tables[r.Table] }); err != nil {
		errs = append(errs, err)
	}
	if err := flushTables(func(t int) bool { return tables[t] }); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func delLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("finding %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

func delRules(match func(netlink.Rule) bool) error {
	rules, err := ownRules(0)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rules {
		if !match(r) {
			continue
		}
		if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("deleting rule iif %s lookup %d: %w", r.IifName, r.Table, err))
		}
	}
	return errors.Join(errs...)
}

func flushTables(match func(int) bool) error {
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range rs {
			if !IsOwnedTable(r.Table) || !match(r.Table) {
				continue
			}
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("deleting %v from table %d: %w", r.Dst, r.Table, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Sweep removes every link, rule and table the daemon's naming marks as its
// own that keep does not claim: the leftovers of pods that went away while
// the daemon was down. It returns how many objects it removed.
func Sweep(logf logger.Logf, keepLink func(string) bool, keepTable func(int) bool) (int, error) {
	var errs []error
	n := 0
	links, err := netlink.LinkList()
	if err != nil {
		return 0, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if !IsOwnedLink(name) || keepLink(name) {
			continue
		}
		logf("sweep: deleting leftover link %s", name)
		if err := delLink(name); err != nil {
			errs = append(errs, err)
		} else {
			n++
		}
	}
	rules, err := ownRules(0)
	if err != nil {
		return n, err
	}
	for _, r := range rules {
		if IsOwnedTable(r.Table) && !keepTable(r.Table) {
			logf("sweep: deleting leftover rule iif %s lookup %d", r.IifName, r.Table)
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, err)
			} else {
				n++
			}
		}
	}
	if err := flushTables(func(t int) bool { return !keepTable(t) }); err != nil {
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

// EnableForwarding turns on IPv4 (and, when want6, IPv6) forwarding: the host
// forwards between each pod's veth and its TUN. It reports the previous
// values so a test can restore them.
func EnableForwarding(want6 bool) (prev map[string]string, err error) {
	prev = map[string]string{}
	paths := []string{filepath.Join(procSysNet, "ipv4/ip_forward")}
	if want6 {
		paths = append(paths, filepath.Join(procSysNet, "ipv6/conf/all/forwarding"))
	}
	for _, p := range paths {
		old, err := os.ReadFile(p)
		if err != nil {
			return prev, fmt.Errorf("reading %s: %w", p, err)
		}
		prev[p] = strings.TrimSpace(string(old))
		if prev[p] == "1" {
			continue
		}
		if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
			return prev, fmt.Errorf("enabling forwarding (%s): %w", p, err)
		}
	}
	return prev, nil
}
