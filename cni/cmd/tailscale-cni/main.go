// Command tailscale-cni is the CNI plugin binary the container runtime runs:
// a thin, stateless shim that passes each command to tailscale-cni-daemon.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"tsymbiote.dhouti.dev/cni/internal/plugin"
)

func main() {
	skel.PluginMainFuncs(plugin.Funcs(), plugin.Versions, "tailscale-cni: gives each pod its own tailnet node (chained plugin)")
}
