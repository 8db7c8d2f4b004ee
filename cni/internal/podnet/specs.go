// Package podnet does the kernel side of a pod's tailnet attachment: the veth
// pair whose pod end is ts0, the per-pod policy-routing table that joins the
// host end to the pod's TUN, and the sweep that removes what a crashed daemon
// left behind. Everything it creates is named from the container ID, so that
// a restarted daemon can find it again without any state but the kernel's.
package podnet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
)

// PodIfName is the name of the pod's tailnet interface inside its netns.
const PodIfName = "ts0"

// Prefixes of the host-side links the daemon owns. Sweep deletes links with
// these prefixes that no live pod claims, so nothing else may use them.
const (
	HostVethPrefix = "tsh"
	TUNPrefix      = "tst"
)

// Policy-routing layout. All pods share one rule priority; each pod has its
// own table in [TableBase, TableBase+TableCount).
const (
	RulePriority = 5270
	TableBase    = 52700
	TableCount   = 4096
)

// Link-local next hops the pod routes its tailnet prefixes through. The host
// end of the veth holds no address: the pod reaches it through permanent
// neighbour entries, so every pod can use the same next hop without ARP.
var (
	GatewayV4 = netip.MustParseAddr("169.254.1.1")
	GatewayV6 = netip.MustParseAddr("fe80::1")
)

// Tailnet address ranges. They are routed into ts0 in the pod and made
// unreachable in the pod's host table so that no tailnet-bound packet can
// fall through to the host's default route.
var (
	TailnetV4   = netip.MustParsePrefix("100.64.0.0/10")
	TailnetV6   = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
	QuadHundred = netip.MustParsePrefix("100.100.100.100/32")
)

// MTU of ts0 and of the host end: the TUN's MTU, so that the pod's TCP MSS
// fits the tunnel without fragmentation.
const MTU = 1280

// Names are the kernel names of one pod's attachment.
type Names struct {
	HostVeth string // host end of the veth pair
	TUN      string // the backend's TUN device
}

// NamesFor derives the link names from a container ID. Linux limits link
// names to 15 bytes, so the ID is hashed; 10 hex digits make a collision
// among a node's pods vanishingly unlikely, and Add checks anyway.
func NamesFor(containerID string) Names {
	h := hashID(containerID)
	return Names{HostVeth: HostVethPrefix + h, TUN: TUNPrefix + h}
}

func hashID(containerID string) string {
	sum := sha256.Sum256([]byte(containerID))
	return hex.EncodeToString(sum[:])[:10]
}

// IsOwnedLink reports whether a link name has one of the daemon's prefixes
// and the hashed form NamesFor produces.
func IsOwnedLink(name string) bool {
	if len(name) != 13 {
		return false
	}
	if !strings.HasPrefix(name, HostVethPrefix) && !strings.HasPrefix(name, TUNPrefix) {
		return false
	}
	_, err := hex.DecodeString(name[3:])
	return err == nil
}

// IsOwnedTable reports whether a routing table number is in the daemon's range.
func IsOwnedTable(t int) bool { return t >= TableBase && t < TableBase+TableCount }

// PickTable chooses the pod's routing table: the hash of its container ID in
// the daemon's range, probing linearly past tables in use.
func PickTable(containerID string, inUse func(int) bool) (int, error) {
	sum := sha256.Sum256([]byte(containerID))
	start := (int(sum[0])<<8 | int(sum[1])) % TableCount
	for i := range TableCount {
		t := TableBase + (start+i)%TableCount
		if !inUse(t) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("all %d routing tables from %d are in use", TableCount, TableBase)
}

// PodRoutes are the routes the pod's netns gets through ts0: the tailnet
// ranges of the families the pod has an address in.
func PodRoutes(addrs []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range addrs {
		if a.Addr().Is4() && !containsPrefix(out, TailnetV4) {
			out = append(out, TailnetV4)
		}
		if a.Addr().Is6() && !containsPrefix(out, TailnetV6) {
			out = append(out, TailnetV6)
		}
	}
	return out
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// HostAddrs turns the backend's local addresses into single-host prefixes,
// the form ts0 holds them in.
func HostAddrs(addrs []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, netip.PrefixFrom(a.Addr(), a.Addr().BitLen()))
	}
	return out
}
