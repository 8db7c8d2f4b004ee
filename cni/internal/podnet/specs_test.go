package podnet

import (
	"net/netip"
	"testing"
)

func TestNames(t *testing.T) {
	n := NamesFor("abc")
	if len(n.HostVeth) != 13 || len(n.TUN) != 13 || !IsOwnedLink(n.HostVeth) || !IsOwnedLink(n.TUN) {
		t.Fatalf("NamesFor = %+v", n)
	}
	if n == NamesFor("abd") {
		t.Fatal("distinct IDs, same names")
	}
	for _, s := range []string{"eth0", "tsh", "tshxyzxyzxyzx", "tst0123456789a"} {
		if IsOwnedLink(s) {
			t.Errorf("IsOwnedLink(%q)", s)
		}
	}
}

func TestPickTable(t *testing.T) {
	used := map[int]bool{}
	for i := range 50 {
		tb, err := PickTable(string(rune('a'+i)), func(t int) bool { return used[t] })
		if err != nil || !IsOwnedTable(tb) || used[tb] {
			t.Fatalf("PickTable = %d, %v", tb, err)
		}
		used[tb] = true
	}
	if _, err := PickTable("x", func(int) bool { return true }); err == nil {
		t.Fatal("no error when all tables are used")
	}
}

func TestPodRoutes(t *testing.T) {
	got := PodRoutes(HostAddrs([]netip.Prefix{netip.MustParsePrefix("100.64.0.1/32"), netip.MustParsePrefix("fd7a:115c:a1e0::1/128")}))
	if len(got) != 2 || got[0] != TailnetV4 || got[1] != TailnetV6 {
		t.Fatalf("PodRoutes = %v", got)
	}
}
