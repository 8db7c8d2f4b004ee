// Package testkit holds the helpers every module's tests share: the policy for tests that need real servers or root, child processes, free ports, and binaries.
package testkit

import (
	"fmt"
	"os"
	"testing"
)

// Integration marks t as needing real servers (Headscale, tailscaled, the
// project's own binaries). `go test -short` skips it, so that -short is the
// tier that runs anywhere, fast, with nothing but Go.
func Integration(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs real servers; skipped under -short")
	}
}

// Root is Integration for a test that also needs root (network namespaces,
// veths, TUN devices, sysctls). Without root it skips, or fails under
// CI=true (see Missing).
func Root(t testing.TB) {
	t.Helper()
	Integration(t)
	if os.Geteuid() != 0 {
		Missing(t, "needs root (network namespaces, links, TUN devices): run the tests as root")
	}
}

// Missing ends t because something it needs is not there: it skips, but
// under CI=true it fails, since CI must run every test and a silent skip
// would hide a broken set-up.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if UnderCI() {
		t.Fatalf("%s (CI=true forbids skipping)", msg)
	}
	t.Skip(msg)
}

// UnderCI reports whether CI=true, under which a test must not skip or
// leave parts out.
func UnderCI() bool { return os.Getenv("CI") == "true" }
