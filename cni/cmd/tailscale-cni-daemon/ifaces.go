package main

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"tailscale.com/net/netmon"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
)

// hostInterfaces is the daemon's netmon interface getter (see
// netmon.RegisterInterfaceGetter): the host's interfaces without the
// daemon's own pod links, each with its addresses from one dump for all.
//
// Every pod node's magicsock lists the host's interfaces and their
// addresses whenever it gathers its endpoints (every 20-26 s while active,
// and on each change), and the shared network monitor does on each change.
// The standard library dumps every address of the host once per interface,
// and each pod adds two links (its host veth and its TUN): at 110 pods one
// listing made about 220 dumps, all 110 nodes did it, and the daemon spent
// its cores in netlink. Pod links carry no address a peer could use as an
// endpoint, and the monitor has no business following them.
func hostInterfaces() ([]netmon.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	all, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	byIndex := map[int][]net.Addr{}
	for _, a := range all {
		if a.IPNet != nil {
			byIndex[a.LinkIndex] = append(byIndex[a.LinkIndex], a.IPNet)
		}
	}
	out := make([]netmon.Interface, 0, len(ifs))
	for i := range ifs {
		if podnet.IsOwnedLink(ifs[i].Name) {
			continue
		}
		addrs := byIndex[ifs[i].Index]
		if addrs == nil {
			addrs = []net.Addr{} // non-nil: netmon would dump again for nil
		}
		out = append(out, netmon.Interface{Interface: &ifs[i], AltAddrs: addrs})
	}
	return out, nil
}
