package testkit

import (
	"fmt"
	"net"
	"strconv"
	"testing"
)

// FreePorts returns n distinct TCP ports free on host. They are held open
// together while chosen, so they differ from each other; another process
// may still take one before the caller binds it, which on a test machine
// is rare enough to accept.
func FreePorts(host string, n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("finding a free port on %s: %w", host, err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreePort returns a TCP port free on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := FreePorts("127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// FreeAddr returns "127.0.0.1:port" for a free port, for flags and
// variables that take a listen address.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}
