package podnet

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddLoopbackAddrs puts addrs (as /32 or /128) on the pod's lo, so that
// the pod's traffic to them stays in its netns: the daemon's DNS
// listeners for the pod sit there.
func AddLoopbackAddrs(netnsPath string, addrs []netip.Addr) error {
	return ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("finding lo in pod: %w", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("bringing up lo in pod: %w", err)
		}
		for _, a := range addrs {
			if err := netlink.AddrReplace(lo, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(a, a.BitLen()))}); err != nil {
				return fmt.Errorf("adding %v to the pod's lo: %w", a, err)
			}
		}
		return nil
	})
}

// RemoveLoopbackAddrs takes addrs off the pod's lo; a netns that is gone
// has nothing to remove.
func RemoveLoopbackAddrs(netnsPath string, addrs []netip.Addr) error {
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("finding lo in pod: %w", err)
		}
		var errs []error
		for _, a := range addrs {
			err := netlink.AddrDel(lo, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(a, a.BitLen()))})
			if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing %v from the pod's lo: %w", a, err))
			}
		}
		return errors.Join(errs...)
	})
	var nsErr ns.NSPathNotExistErr
	if errors.As(err, &nsErr) {
		return nil
	}
	var nsErr2 ns.NSPathNotNSErr
	if errors.As(err, &nsErr2) {
		return nil
	}
	return err
}
