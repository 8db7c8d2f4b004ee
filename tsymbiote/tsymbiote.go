// Package tsymbiote is the `tsymbiote` command: one binary whose
// subcommands run each part (adapter, webui) and report on the tool itself.
//
// It sits above the daemons: it imports their cli packages, and none of
// them imports it or each other, so each still builds as its own binary for
// its own container image.
package tsymbiote

import (
	"github.com/spf13/cobra"
	adaptercli "tsymbiote.dhouti.dev/adapter/cli"
	accesscli "tsymbiote.dhouti.dev/tsymbiote/access"
	podcli "tsymbiote.dhouti.dev/tsymbiote/pod"
	webuicli "tsymbiote.dhouti.dev/webui/cli"
)

// NewCommand returns the root command; getenv reads the environment
// (os.Getenv outside tests).
func NewCommand(getenv func(string) string) *cobra.Command {
	root := &cobra.Command{
		Use:   "tsymbiote",
		Short: "TSymbiote: Kubernetes workloads on a Tailscale or Headscale tailnet, and a WebUI to debug it",
		Long: `TSymbiote gives Kubernetes workloads a first-class life on a Tailscale (or
Headscale) tailnet, and lets you see and debug that tailnet from a browser.

Every part reads its control plane from the environment: TS_OAUTH_CLIENT_ID
and TS_OAUTH_CLIENT_SECRET (or TS_API_KEY) for Tailscale, or HEADSCALE_URL and
HEADSCALE_API_KEY for Headscale; TS_CONTROL_URL is the URL nodes log in to.`,
		// Not runnable itself: without a subcommand cobra prints the help.
		SilenceUsage: true,
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	root.AddCommand(subcommands(getenv)...)
	return root
}

// subcommands are the root's subcommands: the one place a new one (such as
// `tsymbiote access` or `tsymbiote pod`) is registered.
func subcommands(getenv func(string) string) []*cobra.Command {
	return []*cobra.Command{
		adaptercli.NewCommand(getenv),
		webuicli.NewCommand(getenv),
		newVersionCommand(),
		podcli.NewCommand(getenv), podcli.NewNodeCommand(getenv),
		accesscli.NewCommand(getenv),
	}
}
