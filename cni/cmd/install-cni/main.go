// Command install-cni is tailscale-cni's init container: it copies the shim
// into the node's CNI bin dir and chains tailscale-cni into the node's first
// conflist (idempotently), or with --uninstall removes both.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/spf13/cobra"
	"tsymbiote.dhouti.dev/cni/internal/install"
	"tsymbiote.dhouti.dev/cni/internal/release"
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
	// whenGone, with uninstall, names the DaemonSet whose deletion alone
	// makes the uninstall happen (the chart's preStop hook).
	whenGone, namespace, logFile string
	checkTimeout                 time.Duration
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
(idempotently), or with --uninstall removes both.

With --uninstall --when-daemonset-gone=NAME (the chart's preStop hook), it
first asks the API server, with the pod's service account, whether the
DaemonSet NAME is gone or being deleted (helm uninstall), and removes nothing
when it is there (a pod restart or a rolling update), nor when the API server
does not answer within --check-timeout.`,
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
	f.StringVar(&o.whenGone, "when-daemonset-gone", "", "with --uninstall: only if the API server says this DaemonSet is gone or being deleted")
	f.StringVar(&o.namespace, "namespace", envOr(getenv, "POD_NAMESPACE", ""), "the DaemonSet's namespace; the pod's own when empty (env POD_NAMESPACE)")
	f.DurationVar(&o.checkTimeout, "check-timeout", 10*time.Second, "how long --when-daemonset-gone waits for an answer before keeping the chain")
	f.StringVar(&o.logFile, "log-file", "", "also log to this file, like /proc/1/fd/1 so that a preStop hook's lines reach the container's log")
	return cmd
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}

func run(o options) error {
	if o.logFile != "" {
		// Best effort: the hook's decision must not depend on its log.
		if f, err := os.OpenFile(o.logFile, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			defer f.Close()
			log.SetOutput(io.MultiWriter(os.Stderr, f))
		}
	}
	if o.uninstall && o.whenGone != "" {
		c, err := release.InCluster(os.Getenv, release.ServiceAccountDir, o.namespace)
		if err != nil {
			return fmt.Errorf("checking daemonset %s: %w", o.whenGone, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), o.checkTimeout)
		defer cancel()
		if !shouldUninstall(ctx, c.Decide, o.whenGone) {
			return nil
		}
	}
	return installOrUninstall(o)
}

// shouldUninstall asks decide about the DaemonSet and logs the answer.
// Without an answer it keeps the chain and says so; the hook still
// succeeds, since kubelet only reports a failed hook as an event.
func shouldUninstall(ctx context.Context, decide func(context.Context, string) (release.Verdict, string, error), name string) bool {
	v, why, err := decide(ctx, name)
	if err != nil {
		log.Printf("install-cni: keeping tailscale-cni chained: daemonset %s: %v", name, err)
		return false
	}
	if v == release.Keep {
		log.Printf("install-cni: keeping tailscale-cni chained: %s", why)
		return false
	}
	log.Printf("install-cni: removing tailscale-cni: %s", why)
	return true
}

func installOrUninstall(o options) error {
	opts := install.Options{Shim: o.shim, BinDir: o.binDir, ConfDir: o.confDir, Entry: map[string]any{"daemonSocket": o.socket}}
	if o.timeout != "" {
		opts.Entry["timeout"] = o.timeout
	}
	if o.uninstall {
		if err := install.Uninstall(opts); err != nil {
			return fmt.Errorf("uninstall: %w", err)
		}
		log.Printf("install-cni: removed tailscale-cni from %s and %s", o.confDir, o.binDir)
		return nil
	}
	path, err := install.Install(opts)
	if err != nil {
		return err
	}
	log.Printf("install-cni: shim in %s; tailscale-cni chained into %s", o.binDir, path)
	return nil
}
