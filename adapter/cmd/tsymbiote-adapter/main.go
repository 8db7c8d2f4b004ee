// The tsymbiote-adapter command attaches to a running tailscaled through its
// LocalAPI socket, joins the tailnet as its own tsnet node, and serves the
// read-only adapter.v1 gRPC service to nodes tagged --allowed-tag.
//
// Environment: TS_AUTHKEY (else an interactive login URL is logged),
// TSNET_FORCE_LOGIN=1 (use the key even when state exists), and the control
// plane settings every TSymbiote daemon reads: TS_CONTROL_URL or
// HEADSCALE_URL pick the control server; with HEADSCALE_API_KEY (or a
// Tailscale API credential) the node is also deleted on exit with --logout.
package main

import (
	"cmp"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/adapter"
	"tsymbiote.dhouti.dev/controlplane"
)

func main() {
	if err := newCommand(os.Getenv).Execute(); err != nil {
		os.Exit(1)
	}
}

func newCommand(getenv func(string) string) *cobra.Command {
	var cfg adapter.Config
	cmd := &cobra.Command{
		Use:   "tsymbiote-adapter",
		Short: "Attach to a running Tailscale host and answer read-only LocalAPI questions as that host",
		Long: `Attaches to a running Tailscale host and executes LocalAPI calls as that host.
Read-only by design. Callers reach it over the tailnet and must carry --allowed-tag.

Required for non-interactive sessions: TS_AUTHKEY.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logf := logger.Logf(log.New(cmd.ErrOrStderr(), "", log.LstdFlags).Printf)
			if cfg.DiscoverSocket && cmd.Flags().Changed("socket") {
				return fmt.Errorf("--discover-socket and --socket are exclusive")
			}
			if err := fromEnv(logf, &cfg, getenv); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return adapter.Run(ctx, logf, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.AllowedTag, "allowed-tag", adapter.DefaultAllowedTag, "Tag for access control")
	f.BoolVar(&cfg.Dev, "dev", false, "Run in HTTP mode for local dev")
	f.BoolVarP(&cfg.DiscoverSocket, "discover-socket", "d", false, "Auto-discover socket path (for k8s sidecar)")
	f.StringVar(&cfg.Hostname, "hostname", "", "Static hostname")
	f.StringVar(&cfg.HostnamePrefix, "hostname-prefix", adapter.DefaultHostnamePrefix, "Hostname prefix")
	f.BoolVar(&cfg.Logout, "logout", true, "Logout on exit")
	f.StringVarP(&cfg.Port, "port", "p", adapter.DefaultPort, "Service port")
	f.StringArrayVar(&cfg.Sockets, "socket", []string{adapter.DefaultSocket},
		"Path to tailscaled socket, or a directory of *.sock sockets; repeat for several targets")
	return cmd
}

// fromEnv fills the settings that come from the environment. The auth key
// never appears in logs or errors.
func fromEnv(logf logger.Logf, cfg *adapter.Config, getenv func(string) string) error {
	cfg.AuthKey = controlplane.Secret(strings.TrimSpace(getenv("TS_AUTHKEY")))
	cp, err := controlplane.ConfigFromEnv(getenv)
	if err == nil {
		cfg.ControlURL = cp.EffectiveControlURL()
		if cfg.Logout && !cfg.Dev {
			if c, err := controlplane.New(logf, cp); err == nil {
				cfg.ControlPlane = c
			} else {
				logf("control plane client unavailable (%v); --logout will only log out", err)
			}
		}
		return nil
	}
	// No API credentials is normal for an adapter: it needs only the URL
	// to log in to.
	cfg.ControlURL = strings.TrimSpace(cmp.Or(getenv(controlplane.EnvControlURL), getenv(controlplane.EnvHeadscaleURL)))
	return nil
}
