package main

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
	"tailscale.com/net/netmon"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
)

// ifaceCacheTTL bounds how long a listing of the host's interfaces serves
// its callers when no change was seen. Changes invalidate it at once (see
// watchHost); the bound is for a change the kernel's notifications missed.
const ifaceCacheTTL = 10 * time.Second

// ifaceCache shares one listing of the host's interfaces between every
// pod node's magicsock and the daemon's network monitor.
//
// Each magicsock lists the host's interfaces when it gathers its endpoints
// (every 20-26 s while its node is active, on each change, and when a peer
// wants a fresh call-me-maybe): at 110 pods about five listings a second,
// each a dump of every link of the host (two per pod) that the garbage
// collector then has to clear, 12.5% of an idle daemon's CPU and much of
// its garbage. The host's interfaces rarely change, and when they do the
// kernel says so: watchHost invalidates the cache on every link or address
// notification for a link that is not a pod's and then asks the monitor to
// look again (Poll: callbacks only if something differs), so a monitor that
// read the cache just before the invalidation reads it again, fresh.
//
// Safe for concurrent use; a listing in flight serves every caller waiting
// for it.
type ifaceCache struct {
	list func() ([]netmon.Interface, error) // hostInterfaces outside tests
	now  func() time.Time
	ttl  time.Duration

	gen atomic.Uint64 // bumped by invalidate

	mu    sync.Mutex // held while listing
	ifs   []netmon.Interface
	at    time.Time // when ifs was listed
	atGen uint64    // gen when the listing began
	have  bool
}

func newIfaceCache(list func() ([]netmon.Interface, error)) *ifaceCache {
	return &ifaceCache{list: list, now: time.Now, ttl: ifaceCacheTTL}
}

// get is the interface getter netmon calls (see netmon.RegisterInterfaceGetter).
func (c *ifaceCache) get() ([]netmon.Interface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.gen.Load()
	if !c.have || c.atGen != g || c.now().Sub(c.at) >= c.ttl {
		ifs, err := c.list()
		if err != nil {
			return nil, err
		}
		// Read gen before listing: a change seen while listing leaves
		// this listing stale for the next caller.
		c.ifs, c.at, c.atGen, c.have = ifs, c.now(), g, true
	}
	// A copy: netmon keeps the slice in its state; the interfaces and
	// their address slices are only read.
	return slices.Clone(c.ifs), nil
}

// invalidate makes the next get list the host's interfaces again. It never
// waits for a listing in flight.
func (c *ifaceCache) invalidate() { c.gen.Add(1) }

// watchHost follows the kernel's link and address notifications until ctx
// ends: on each that may concern a host interface (any address change, and
// link changes except the daemon's own pod links) it invalidates c and
// then calls changed (the monitor's Poll), so the monitor looks again
// with a fresh listing. When the notifications cannot be trusted (the
// socket overflowed or failed) it does the same and subscribes again.
func watchHost(ctx context.Context, logf logger.Logf, c *ifaceCache, changed func()) {
	for ctx.Err() == nil {
		err := watchHostOnce(ctx, c, changed)
		c.invalidate()
		changed()
		if ctx.Err() != nil {
			return
		}
		logf("host interface notifications: %v; subscribing again", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func watchHostOnce(ctx context.Context, c *ifaceCache, changed func()) error {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, s.Close)
	defer func() {
		if stop() {
			s.Close()
		}
	}()
	// A burst of pod ADDs notifies a few messages per pod; a larger buffer
	// makes an overflow (which costs a fresh listing, not a missed change)
	// rarer. Best effort: the default still works.
	_ = s.SetReceiveBufferSize(1<<20, false)
	// Whatever changed before the subscription.
	c.invalidate()
	changed()
	for {
		msgs, from, err := s.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		if slices.ContainsFunc(msgs, mayConcernHost) {
			c.invalidate()
			changed()
		}
	}
}

// mayConcernHost reports whether a notification may change what
// hostInterfaces lists: any address change (the message names the link
// only by index), and a link change unless the link is a pod's.
func mayConcernHost(m syscall.NetlinkMessage) bool {
	switch m.Header.Type {
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		return true
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		name, err := linkName(m.Data)
		return err != nil || !podnet.IsOwnedLink(name)
	}
	return false
}

// linkName is the IFLA_IFNAME of a link message's body.
func linkName(b []byte) (string, error) {
	if len(b) < unix.SizeofIfInfomsg {
		return "", errors.New("short link message")
	}
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofIfInfomsg:])
	if err != nil {
		return "", err
	}
	for _, a := range attrs {
		if a.Attr.Type == unix.IFLA_IFNAME {
			v := a.Value
			if i := slices.Index(v, 0); i >= 0 {
				v = v[:i]
			}
			return string(v), nil
		}
	}
	return "", errors.New("link message without a name")
}
