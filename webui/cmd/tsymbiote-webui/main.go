// The tsymbiote-webui command serves the TSymbiote WebUI: a React frontend
// and a Go API that call every adapter on the tailnet at once. It serves
// over tsnet on port 3621, or with --dev on http://127.0.0.1:3621. It is
// `tsymbiote webui` built alone, for the WebUI's container image.
//
// Environment: the control plane settings every TSymbiote daemon reads
// (TS_OAUTH_CLIENT_ID/TS_OAUTH_CLIENT_SECRET or TS_API_KEY for Tailscale,
// HEADSCALE_URL/HEADSCALE_API_KEY for Headscale, TS_CONTROL_URL), used to
// list the adapters and, with --generate-auth, to mint the WebUI's own
// ephemeral tag:tsymbiote-webui key; TS_AUTHKEY when --generate-auth=false;
// TSNET_FORCE_LOGIN=1 to log in with the key even when state exists.
package main

import (
	"os"

	"github.com/spf13/cobra"
	"tsymbiote.dhouti.dev/webui/cli"
)

func main() {
	if err := newCommand(os.Getenv).Execute(); err != nil {
		os.Exit(1)
	}
}

// newCommand is the WebUI command under the binary's own name.
func newCommand(getenv func(string) string) *cobra.Command {
	cmd := cli.NewCommand(getenv)
	cmd.Use = "tsymbiote-webui"
	return cmd
}
