// Package e2e holds tailscale-cni's end-to-end tests: they build the shim
// and the daemon, run the daemon as its own process, and drive the shim
// through libcni, chained after the reference bridge plugin, against real
// network namespaces and a real Headscale. They need root; they skip
// without it, and fail under CI=true.
package e2e
