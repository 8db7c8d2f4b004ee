// Package cli is the WebUI's command line: `tsymbiote webui` and the
// stand-alone tsymbiote-webui binary run the same cobra command.
package cli

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/webui"
)

// NewCommand returns the WebUI command, named "webui"; getenv reads the
// environment (os.Getenv outside tests). The command prints the WebUI's URL
// once it serves, and stops on SIGINT and SIGTERM, logging out first with
// --logout.
func NewCommand(getenv func(string) string) *cobra.Command {
	var (
		cfg    webui.Config
		scopes []string
	)
	cmd := &cobra.Command{
		Use:   "webui",
		Short: "Serve the TSymbiote WebUI: see the whole tailnet and debug it from every host at once",
		Long: `Serves a React frontend with a Go API backend over tsnet.

Required: TS_OAUTH_CLIENT_ID and TS_OAUTH_CLIENT_SECRET (or TS_API_KEY, or
HEADSCALE_URL and HEADSCALE_API_KEY): they list the adapters and, with
--generate-auth, mint the WebUI's key. Optionally accepts TS_AUTHKEY when
--generate-auth=false. TS_CONTROL_URL picks the control server the WebUI
logs in to; TSNET_FORCE_LOGIN=1 logs in with the key even when state exists.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logf := logger.Logf(log.New(cmd.ErrOrStderr(), "", log.LstdFlags).Printf)
			if err := fromEnv(logf, &cfg, scopes, getenv); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.OnReady = func(r webui.Ready) {
				fmt.Fprintf(cmd.OutOrStdout(), "TSymbiote WebUI: %s\n", r.URL)
			}
			return webui.Run(ctx, logf, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.AdapterPort, "adapter-port", webui.DefaultAdapterPort, "Adapter port")
	f.StringSliceVar(&cfg.AllowedUsers, "allowed-users", nil, "Comma-separated allowed users")
	f.BoolVar(&cfg.Dev, "dev", false, "Run in HTTP mode for local dev")
	f.BoolVar(&cfg.GenerateAuth, "generate-auth", false, "Generate authkey using OAuth client")
	f.StringVar(&cfg.Hostname, "hostname", "", "Static hostname")
	f.StringVar(&cfg.HostnamePrefix, "hostname-prefix", webui.DefaultHostnamePrefix, "Hostname prefix")
	f.BoolVar(&cfg.Logout, "logout", true, "Logout on exit")
	f.StringVarP(&cfg.Port, "port", "p", webui.DefaultPort, "Service port")
	f.StringSliceVar(&scopes, "scopes", webui.DefaultScopes, "OAuth scopes")
	// --health-addr is for the pod the operator deploys (its probes), not
	// for people: hidden from --help, whose flags are the documented ones.
	f.StringVar(&cfg.HealthAddr, "health-addr", "", "Serve /healthz and /readyz over plain HTTP on this host:port, for the kubelet's probes (off when empty)")
	// --adapter is a development aid beside the documented flags (hidden
	// from --help): it works only with --dev, against adapters run with
	// --dev, and needs no control plane.
	f.StringArrayVar(&cfg.Adapters, "adapter", nil, "With --dev: an adapter's host:port to call directly instead of discovering adapters (repeatable; for adapters run with --dev)")
	// --access needs the cluster's access.tsymbiote.dhouti.dev resources
	// and RBAC for them: the operator turns it on in the pod it deploys.
	// Hidden from --help like --health-addr.
	f.BoolVar(&cfg.Access, "access", false, "Serve the Access page and /api/access from the cluster's AccessTargets and AccessRequests (in-cluster ServiceAccount, else $KUBECONFIG)")
	_ = f.MarkHidden("access")
	_ = f.MarkHidden("adapter")
	_ = f.MarkHidden("health-addr")
	return cmd
}

// fromEnv fills the settings that come from the environment. Keys never
// appear in logs or errors.
func fromEnv(logf logger.Logf, cfg *webui.Config, scopes []string, getenv func(string) string) error {
	cfg.AuthKey = controlplane.Secret(strings.TrimSpace(getenv("TS_AUTHKEY")))
	cp, err := controlplane.ConfigFromEnv(getenv)
	if err != nil {
		if len(cfg.Adapters) > 0 && !cfg.GenerateAuth {
			// --dev --adapter needs no control plane.
			return nil
		}
		return err
	}
	cp.Scopes = scopes
	cfg.ControlURL = cp.EffectiveControlURL()
	c, err := controlplane.New(logf, cp)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Verify(ctx); err != nil {
		return fmt.Errorf("control plane (%s): %w", c.Backend(), err)
	}
	cfg.ControlPlane = c
	return nil
}
