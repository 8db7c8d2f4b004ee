// Package cniv1 is the generated Go for cni/v1/cni.proto: the service the
// tailscale-cni shim calls on the node daemon over a unix socket.
package cniv1
