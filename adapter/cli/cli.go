// Package cli is the adapter's command line: `tsymbiote adapter` and the
// stand-alone tsymbiote-adapter binary run the same cobra command.
package cli

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

// NewCommand returns the adapter command, named "adapter"; getenv reads
// the environment (os.Getenv outside tests). The command stops on SIGINT
// and SIGTERM, logging out first with --logout.
func NewCommand(getenv func(string) string) *cobra.Command {
	var cfg adapter.Config
	cmd := &cobra.Command{
		Use:   "adapter",
		Short: "Attach to a running Tailscale host and answer read-only LocalAPI questions as that host",
		Long: `Attaches to a running Tailscale host and executes LocalAPI calls as that host.
Read-only by design. Callers reach it over the tailnet and must carry --allowed-tag.

--socket may name a directory of *.sock sockets, and may be repeated to serve
several tailscaled hosts at once.

Required for non-interactive sessions: TS_AUTHKEY, or control-plane API
credentials (HEADSCALE_URL and HEADSCALE_API_KEY, TS_OAUTH_CLIENT_ID and
TS_OAUTH_CLIENT_SECRET, or TS_API_KEY), with which the adapter mints its
own tag:tsymbiote-adapter key when TS_AUTHKEY is empty. TSNET_FORCE_LOGIN=1
logs in with the key even when state exists. TS_CONTROL_URL or HEADSCALE_URL
pick the control server; with API credentials the node is also deleted on
exit with --logout.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logf := logger.Logf(log.New(cmd.ErrOrStderr(), "", log.LstdFlags).Printf)
			if cfg.DiscoverSocket && cmd.Flags().Changed("socket") {
				return fmt.Errorf("--discover-socket and --socket are exclusive")
			}
			fromEnv(logf, &cfg, getenv)
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
	socketFlag(f.VarPF(newSockets(&cfg.Sockets, adapter.DefaultSocket), "socket", "",
		"Path to tailscaled socket (default "+adapter.DefaultSocket+")"))
	return cmd
}

// fromEnv fills the settings that come from the environment. Without
// TS_AUTHKEY, API credentials mint the key (GenerateAuth): an adapter a
// chart runs on every node has no operator to hand it one, and a reusable
// key in a Secret would outlive its use. The auth key never appears in logs
// or errors.
func fromEnv(logf logger.Logf, cfg *adapter.Config, getenv func(string) string) {
	cfg.AuthKey = controlplane.Secret(strings.TrimSpace(getenv("TS_AUTHKEY")))
	cp, err := controlplane.ConfigFromEnv(getenv)
	if err != nil {
		// No API credentials is normal for an adapter: it needs only the
		// URL to log in to.
		cfg.ControlURL = strings.TrimSpace(cmp.Or(getenv(controlplane.EnvControlURL), getenv(controlplane.EnvHeadscaleURL)))
		return
	}
	cfg.ControlURL = cp.EffectiveControlURL()
	if cfg.Dev {
		return
	}
	cfg.GenerateAuth = cfg.AuthKey.IsZero()
	if !cfg.Logout && !cfg.GenerateAuth {
		return
	}
	if c, err := controlplane.New(logf, cp); err == nil {
		cfg.ControlPlane = c
	} else if cfg.GenerateAuth {
		// Validate then stops, naming the missing credentials.
		logf("control plane client unavailable (%v); no auth key can be minted", err)
	} else {
		logf("control plane client unavailable (%v); --logout will only log out", err)
	}
}
