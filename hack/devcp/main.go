// The tsymbiote-devcp command gives `make webui-dev` and `make adapter-dev`
// a control plane on a fresh clone: when the environment names none, it
// starts a local Headscale on loopback (the pinned bin/headscale), runs the
// given command with HEADSCALE_URL, HEADSCALE_API_KEY and TS_CONTROL_URL set,
// and stops Headscale when the command ends or on Ctrl-C. Without a command
// it prints that environment and waits for Ctrl-C.
//
// A second devcp with the same --state reuses the running Headscale, so that
// an adapter started in one terminal joins the WebUI's tailnet in another;
// it stops with the devcp that started it. With a control plane in the
// environment (TS_OAUTH_CLIENT_ID, TS_API_KEY or HEADSCALE_URL) it only runs
// the command, and {socket} in it stands for tailscaled's default socket.
//
// Nothing it starts talks to anything but loopback: no log upload, no public
// DERP, no port mapping.
package main

import (
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		var exit *exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		log.Fatalf("devcp: %v", err)
	}
}

func newCommand() *cobra.Command {
	var opts options
	cmd := &cobra.Command{
		Use:   "tsymbiote-devcp [flags] [-- command [args...]]",
		Short: "Run a command against a local Headscale when no control plane is configured",
		// The command's own flags belong to it, not to devcp.
		Args:          cobra.ArbitraryArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.command = args
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, log.Printf, opts)
		},
	}
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.StringVar(&opts.state, "state", "bin/devcp", "directory where a running devcp publishes its control plane for the next one")
	f.StringVar(&opts.tailscaled, "tailscaled", "", "also start a userspace tailscaled with this hostname on the local control plane; {socket} in the command stands for its socket")
	f.StringVar(&opts.keyTag, "key-tag", "", "mint a preauthorized, ephemeral auth key with this tag for the command (TS_AUTHKEY)")
	return cmd
}

type options struct {
	state      string
	tailscaled string
	keyTag     string
	command    []string
}

// exitError carries the command's exit status out of run, so that devcp
// exits as the command did once it has cleaned up.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("command exited with status %d", e.code) }
