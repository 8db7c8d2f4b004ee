// Command kubectl-tsymbiote is `tsymbiote pod` and `tsymbiote node` as a
// kubectl plugin: on $PATH, `kubectl tsymbiote pod status <namespace>/<pod>`.
package main

import (
	"os"

	"github.com/spf13/cobra"
	"tsymbiote.dhouti.dev/tsymbiote/pod"
)

func main() {
	if err := newCommand(os.Getenv).Execute(); err != nil {
		os.Exit(1)
	}
}

func newCommand(getenv func(string) string) *cobra.Command {
	root := &cobra.Command{
		Use: "kubectl-tsymbiote",
		// Usage lines read as the user types it.
		Annotations:  map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl tsymbiote"},
		Short:        "Debug tailscale-cni pods' tailnet nodes and the nodes' daemons",
		SilenceUsage: true,
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	root.AddCommand(pod.NewCommand(getenv), pod.NewNodeCommand(getenv))
	return root
}
