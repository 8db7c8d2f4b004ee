// The tsymbiote-adapter command attaches to a running tailscaled through its
// LocalAPI socket, joins the tailnet as its own tsnet node, and serves the
// read-only adapter.v1 gRPC service to nodes tagged --allowed-tag. It is
// `tsymbiote adapter` built alone, for the adapter's container image.
//
// Environment: TS_AUTHKEY (else an interactive login URL is logged),
// TSNET_FORCE_LOGIN=1 (use the key even when state exists), and the control
// plane settings every TSymbiote daemon reads: TS_CONTROL_URL or
// HEADSCALE_URL pick the control server; with HEADSCALE_API_KEY (or a
// Tailscale API credential) the node is also deleted on exit with --logout.
package main

import (
	"os"

	"github.com/spf13/cobra"
	"tsymbiote.dhouti.dev/adapter/cli"
)

func main() {
	if err := newCommand(os.Getenv).Execute(); err != nil {
		os.Exit(1)
	}
}

// newCommand is the adapter command under the binary's own name.
func newCommand(getenv func(string) string) *cobra.Command {
	cmd := cli.NewCommand(getenv)
	cmd.Use = "tsymbiote-adapter"
	return cmd
}
