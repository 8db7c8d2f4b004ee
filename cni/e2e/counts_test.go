package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// counts are the host objects tailscale-cni makes; a test that ends with
// every pod DELeted must find them as they were before it.
type counts struct {
	Links, TUNs, Rules, Routes, StateDirs, Sockets int
}

func (c counts) String() string {
	return fmt.Sprintf("links=%d tuns=%d rules=%d routes=%d statedirs=%d sockets=%d", c.Links, c.TUNs, c.Rules, c.Routes, c.StateDirs, c.Sockets)
}

func (e *env) counts(t testing.TB) counts {
	t.Helper()
	var c counts
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name == e.bridge {
			continue // the bridge plugin's, left by design
		}
		c.Links++
		if l.Type() == "tuntap" {
			c.TUNs++
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := netlink.RuleList(fam)
		if err != nil {
			t.Fatal(err)
		}
		c.Rules += len(rules)
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().Name == e.bridge {
				continue
			}
			c.Routes++
		}
	}
	ents, _ := os.ReadDir(filepath.Join(e.dir, "state", "pods"))
	c.StateDirs = len(ents)
	ents, _ = os.ReadDir(filepath.Join(e.dir, "run", "pods"))
	c.Sockets = len(ents)
	return c
}
