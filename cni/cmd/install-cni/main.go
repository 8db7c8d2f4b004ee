// Command install-cni is tailscale-cni's init container: it copies the shim
// into the node's CNI bin dir and chains tailscale-cni into the node's first
// conflist (idempotently), or with --uninstall removes both.
package main

import (
	"fmt"
	"log"
	"os"

	"github.com/spf13/cobra"
	"tsymbiote.dhouti.dev/cni/internal/install"
)

func main() {
	if err := newCommand(os.Getenv).Execute(); err != nil {
		log.Fatalf("install-cni: %v", err)
	}
}

// defaultSocket is the shim's default daemon socket
// (plugin.DefaultDaemonSocket, which a test checks): a literal, so that
// install-cni does not link the shim's gRPC client.
const defaultSocket = "/var/run/tailscale-cni/daemon.sock"

// options are install-cni's flags.
type options struct {
	shim, binDir, confDir, socket, timeout string
	uninstall                              bool
}

// newCommand is install-cni's command; getenv reads the environment
// (os.Getenv outside tests), which gives most flags their defaults.
func newCommand(getenv func(string) string) *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "install-cni",
		Short: "Install the tailscale-cni shim and chain it into the node's CNI config",
		Long: `install-cni is tailscale-cni's init container: it copies the shim into the
node's CNI bin dir and chains tailscale-cni into the node's first conflist
(idempotently), or with --uninstall removes both.`,
		Args:          cobra.NoArgs,
		SilenceErrors: true, // main logs it
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true // past the flags, an error is no usage mistake
			return run(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.shim, "shim", envOr(getenv, "TS_CNI_SHIM", "/opt/tailscale-cni/tailscale-cni"), "the shim binary to install (env TS_CNI_SHIM)")
	f.StringVar(&o.binDir, "cni-bin-dir", envOr(getenv, "CNI_BIN_DIR", "/host/opt/cni/bin"), "the node's CNI bin dir, as mounted (env CNI_BIN_DIR)")
	f.StringVar(&o.confDir, "cni-conf-dir", envOr(getenv, "CNI_CONF_DIR", "/host/etc/cni/net.d"), "the node's CNI conf dir, as mounted (env CNI_CONF_DIR)")
	f.StringVar(&o.socket, "daemon-socket", envOr(getenv, "TS_CNI_SOCKET", defaultSocket), "the daemon socket the shim dials, as the node sees it (env TS_CNI_SOCKET)")
	f.StringVar(&o.timeout, "timeout", envOr(getenv, "TS_CNI_SHIM_TIMEOUT", ""), "per-call timeout for the shim, like 90s; empty keeps the shim's default")
	f.BoolVar(&o.uninstall, "uninstall", false, "remove tailscale-cni from every conflist and the shim from the bin dir")
	return cmd
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}

func run(o options) error {
	io := install.Options{Shim: o.shim, BinDir: o.binDir, ConfDir: o.confDir, Entry: map[string]any{"daemonSocket": o.socket}}
	if o.timeout != "" {
		io.Entry["timeout"] = o.timeout
	}
	if o.uninstall {
		if err := install.Uninstall(io); err != nil {
			return fmt.Errorf("uninstall: %w", err)
		}
		log.Printf("install-cni: removed tailscale-cni from %s and %s", o.confDir, o.binDir)
		return nil
	}
	path, err := install.Install(io)
	if err != nil {
		return err
	}
	log.Printf("install-cni: shim in %s; tailscale-cni chained into %s", o.binDir, path)
	return nil
}
