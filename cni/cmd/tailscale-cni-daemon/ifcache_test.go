package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"tailscale.com/net/netmon"
	"tailscale.com/util/eventbus"
	"tsymbiote.dhouti.dev/testkit"
)

// TestIfaceCache: one listing serves callers until the TTL or an
// invalidation, a change seen while listing leaves that listing stale, and
// errors are not kept.
func TestIfaceCache(t *testing.T) {
	now := time.Unix(1000, 0)
	var lists atomic.Int32
	var failNext bool
	var c *ifaceCache
	var during func() // runs inside the next listing
	c = newIfaceCache(func() ([]netmon.Interface, error) {
		n := lists.Add(1)
		if during != nil {
			f := during
			during = nil
			f()
		}
		if failNext {
			failNext = false
			return nil, errors.New("boom")
		}
		return []netmon.Interface{{Interface: &net.Interface{Index: int(n), Name: fmt.Sprintf("eth%d", n)}, AltAddrs: []net.Addr{}}}, nil
	})
	c.now = func() time.Time { return now }
	get := func() string {
		t.Helper()
		ifs, err := c.get()
		if err != nil {
			return "error"
		}
		return ifs[0].Name
	}
	for _, step := range []struct {
		name string
		do   func()
		want string
	}{
		{"first call lists", nil, "eth1"},
		{"within the TTL: cached", func() { now = now.Add(ifaceCacheTTL - time.Millisecond) }, "eth1"},
		{"at the TTL: lists again", func() { now = now.Add(time.Millisecond) }, "eth2"},
		{"invalidated: lists again", c.invalidate, "eth3"},
		{"cached after that", nil, "eth3"},
		{"invalidated while listing: that listing is served once", func() { c.invalidate(); during = c.invalidate }, "eth4"},
		{"and not kept", nil, "eth5"},
		{"an error is returned", func() { c.invalidate(); failNext = true }, "error"},
		{"and not kept", nil, "eth7"},
	} {
		if step.do != nil {
			step.do()
		}
		if got := get(); got != step.want {
			t.Fatalf("%s: got %s, want %s", step.name, got, step.want)
		}
	}
	// Callers get their own slice: appending to one is not seen by the next.
	a, _ := c.get()
	_ = append(a[:0], netmon.Interface{Interface: &net.Interface{Name: "mine"}})
	if got := get(); got != "eth7" {
		t.Errorf("a caller's append changed the cache: %s", got)
	}
}

// TestMayConcernHost: address notifications always count, link ones unless
// the link is a pod's.
func TestMayConcernHost(t *testing.T) {
	linkMsg := func(typ uint16, name string) []byte {
		b := make([]byte, 16) // ifinfomsg
		attr := append([]byte(name), 0)
		l := 4 + len(attr)
		hdr := []byte{byte(l), byte(l >> 8), 3, 0} // IFLA_IFNAME = 3
		b = append(b, hdr...)
		b = append(b, attr...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		typ  uint16
		data []byte
		want bool
	}{
		{"new address", 20, nil, true},               // RTM_NEWADDR
		{"deleted address", 21, nil, true},           // RTM_DELADDR
		{"host link", 16, linkMsg(16, "eth0"), true}, // RTM_NEWLINK
		{"pod veth", 16, linkMsg(16, "tsh0123456789"), false},
		{"pod TUN gone", 17, linkMsg(17, "tst0123456789"), false}, // RTM_DELLINK
		{"unreadable link message", 16, []byte{1, 2}, true},
		{"route", 24, nil, false}, // RTM_NEWROUTE
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := netlinkMessage(tc.typ, tc.data)
			if got := mayConcernHost(m); got != tc.want {
				t.Errorf("mayConcernHost = %v, want %v", got, tc.want)
			}
		})
	}
}

// envInNetns marks the copy of the test binary TestWatchHost runs in its own
// network namespace.
const envInNetns = "TSCNI_TEST_IN_NETNS"

// TestWatchHost changes the host's interfaces under a network monitor that
// reads them through the cache, and checks that the monitor sees each
// change: an address added to a new link (a veth) and the link going away. It runs
// in a network namespace of its own (a copy of this test under unshare -n),
// which goes with it.
func TestWatchHost(t *testing.T) {
	if os.Getenv(envInNetns) == "" {
		testkit.Root(t)
		if _, err := exec.LookPath("unshare"); err != nil {
			testkit.Missing(t, "needs unshare(1) for a private network namespace")
		}
		cmd := exec.Command("unshare", "-n", os.Args[0], "-test.run=^TestWatchHost$", "-test.v")
		cmd.Env = append(os.Environ(), envInNetns+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("in a private network namespace:\n%s", out)
		if err != nil {
			t.Fatalf("TestWatchHost in its namespace: %v", err)
		}
		if !strings.Contains(string(out), "--- PASS: TestWatchHost") {
			t.Fatalf("TestWatchHost did not pass in its namespace")
		}
		return
	}

	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	c := newIfaceCache(hostInterfaces)
	netmon.RegisterInterfaceGetter(c.get)
	t.Cleanup(func() { netmon.RegisterInterfaceGetter(nil) })
	bus := eventbus.New()
	t.Cleanup(bus.Close)
	nm, err := netmon.New(bus, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nm.Close() })
	states := make(chan *netmon.State, 16)
	nm.RegisterChangeCallback(func(d *netmon.ChangeDelta) {
		select {
		case states <- d.CurrentState():
		default:
		}
	})
	nm.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); watchHost(ctx, t.Logf, c, nm.Poll) }()
	t.Cleanup(func() { cancel(); <-done })
	// Fill the cache, as every magicsock would, so that only the watch can
	// make the monitor see the change within the cache's TTL.
	if _, err := c.get(); err != nil {
		t.Fatal(err)
	}

	addr := netip.MustParseAddr("192.0.2.7")
	waitState := func(what string, ok func(*netmon.State) bool) {
		t.Helper()
		timeout := time.After(ifaceCacheTTL / 2)
		for {
			select {
			case s := <-states:
				if ok(s) {
					return
				}
			case <-timeout:
				t.Fatalf("the monitor never saw %s within %v (the cache's TTL is %v)", what, ifaceCacheTTL/2, ifaceCacheTTL)
			}
		}
	}
	hasAddr := func(s *netmon.State) bool {
		for _, pfx := range s.InterfaceIPs["wh0"] {
			if pfx.Addr() == addr {
				return true
			}
		}
		return false
	}
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "wh0"}, PeerName: "wh1"}
	if err := netlink.LinkAdd(d); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(d); err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(d, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	waitState("the new address", hasAddr)
	regular, _, err := netmon.LocalAddresses()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range regular {
		found = found || a == addr
	}
	if !found {
		t.Errorf("LocalAddresses (a magicsock's endpoints) = %v, missing %v", regular, addr)
	}
	if err := netlink.LinkDel(d); err != nil {
		t.Fatal(err)
	}
	waitState("the link gone", func(s *netmon.State) bool { _, ok := s.Interface["wh0"]; return !ok })
}

func netlinkMessage(typ uint16, data []byte) syscall.NetlinkMessage {
	return syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: typ}, Data: data}
}
