package main

import (
	"net"
	"slices"
	"testing"
)

// TestHostInterfaces compares hostInterfaces with the standard library's
// view of this host: the same interfaces (none of them the daemon's here)
// with the same addresses.
func TestHostInterfaces(t *testing.T) {
	got, err := hostInterfaces()
	if err != nil {
		t.Fatal(err)
	}
	want, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || len(got) > len(want) {
		t.Fatalf("got %d interfaces, the host has %d", len(got), len(want))
	}
	for _, g := range got {
		i, err := net.InterfaceByIndex(g.Index)
		if err != nil {
			continue // gone since
		}
		wantAddrs, err := i.Addrs()
		if err != nil {
			t.Fatal(err)
		}
		gotAddrs, _ := g.Addrs()
		str := func(as []net.Addr) []string {
			var s []string
			for _, a := range as {
				s = append(s, a.String())
			}
			slices.Sort(s)
			return s
		}
		if !slices.Equal(str(gotAddrs), str(wantAddrs)) {
			t.Errorf("%s: addresses %v, want %v", g.Name, str(gotAddrs), str(wantAddrs))
		}
	}
}
