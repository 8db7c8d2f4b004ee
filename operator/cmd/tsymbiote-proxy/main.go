// The tsymbiote-proxy command is the proxy the operator runs for each exposed
// Service, Ingress and subnet router: a tsnet node that forwards tailnet
// traffic into the cluster.
//
// Environment (set by the operator): TSYMBIOTE_PROXY_CONFIG_SECRET (the
// Secret holding config.json and the TLS certificates, watched for changes),
// TSYMBIOTE_PROXY_STATE_SECRET (where the node keeps its identity, and where
// it reports its FQDN, addresses and node ID), POD_NAMESPACE (the Secrets'
// namespace), TS_AUTHKEY (joins the tailnet the first time), TS_CONTROL_URL
// (empty is Tailscale's), and TS_DEBUG_USE_DERP_HTTP=1 for a Headscale whose
// DERP has no TLS.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"tailscale.com/envknob"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/operator/internal/proxy"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
)

func main() {
	if err := newCommand(os.Getenv).Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "tsymbiote-proxy: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	metricsAddr string
	dir         string
	kubeconfig  string
	verbose     bool
}

// config is what the environment says, checked.
type config struct {
	configSecret, stateSecret, namespace string
	authKey, controlURL                  string
}

func configFromEnv(getenv func(string) string) (config, error) {
	c := config{
		configSecret: strings.TrimSpace(getenv(proxyconfig.EnvConfigSecret)),
		stateSecret:  strings.TrimSpace(getenv(proxyconfig.EnvStateSecret)),
		namespace:    strings.TrimSpace(getenv(proxyconfig.EnvPodNamespace)),
		authKey:      strings.TrimSpace(getenv(proxyconfig.EnvAuthKey)),
		controlURL:   strings.TrimSpace(getenv(proxyconfig.EnvControlURL)),
	}
	for _, v := range []struct{ env, val string }{
		{proxyconfig.EnvConfigSecret, c.configSecret},
		{proxyconfig.EnvStateSecret, c.stateSecret},
		{proxyconfig.EnvPodNamespace, c.namespace},
	} {
		if v.val == "" {
			return c, fmt.Errorf("%s is not set", v.env)
		}
		if !validSecretName(v.val) {
			return c, fmt.Errorf("%s: %q is not a Kubernetes object name", v.env, v.val)
		}
	}
	if c.configSecret == c.stateSecret {
		return c, fmt.Errorf("%s and %s both name Secret %q: the node state needs its own", proxyconfig.EnvConfigSecret, proxyconfig.EnvStateSecret, c.stateSecret)
	}
	if c.controlURL != "" && !strings.HasPrefix(c.controlURL, "http://") && !strings.HasPrefix(c.controlURL, "https://") {
		return c, fmt.Errorf("%s: %q is not an http(s) URL", proxyconfig.EnvControlURL, c.controlURL)
	}
	return c, nil
}

// validSecretName is a DNS subdomain: dot-separated DNS labels, at most 253.
func validSecretName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if proxyconfig.ValidHostname(l) != nil {
			return false
		}
	}
	return true
}

func newCommand(getenv func(string) string) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "tsymbiote-proxy",
		Short: "Expose Kubernetes Services, Ingresses and subnets on the tailnet",
		Long: `tsymbiote-proxy is a tailnet node that forwards to the cluster what its
config Secret says: TCP and UDP ports to Services, HTTP(S) routes of an
Ingress, and subnet routes. The operator creates it and writes its config.

Environment: ` + proxyconfig.EnvConfigSecret + `, ` + proxyconfig.EnvStateSecret + `,
` + proxyconfig.EnvPodNamespace + ` (required), ` + proxyconfig.EnvAuthKey + `, ` + proxyconfig.EnvControlURL + `.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := configFromEnv(getenv)
			if err != nil {
				return err
			}
			return run(cmd.Context(), o, c)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.metricsAddr, "metrics-addr", proxyconfig.DefaultMetricsAddr, "where to serve /metrics, /healthz and /readyz (empty: nowhere)")
	f.StringVar(&o.dir, "dir", filepath.Join(os.TempDir(), "tsymbiote-proxy"), "tsnet's working directory (not the node state, which is in the state Secret)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig to use outside a cluster (default: the in-cluster config)")
	f.BoolVar(&o.verbose, "verbose", false, "log tsnet's backend (verbose)")
	return cmd
}

func run(ctx context.Context, o *options, c config) error {
	if ctx == nil {
		ctx = context.Background()
	}
	// Nothing this process runs uploads logs.
	envknob.SetNoLogsNoSupport()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	logf := logger.Logf(log.New(os.Stderr, "", log.LstdFlags|log.LUTC).Printf)
	var rc *rest.Config
	var err error
	if o.kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return fmt.Errorf("--kubeconfig %s: %w", o.kubeconfig, err)
		}
	} else if rc, err = rest.InClusterConfig(); err != nil {
		return fmt.Errorf("in-cluster Kubernetes config (use --kubeconfig outside a cluster): %w", err)
	}
	rc.UserAgent = "tsymbiote-proxy"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	po := proxy.Options{
		Secrets:      proxy.KubeSecrets(cs.CoreV1().Secrets(c.namespace)),
		ConfigSecret: c.configSecret,
		StateSecret:  c.stateSecret,
		AuthKey:      c.authKey,
		ControlURL:   c.controlURL,
		Dir:          o.dir,
		MetricsAddr:  o.metricsAddr,
	}
	if o.verbose {
		po.TsnetLogf = logger.WithPrefix(logf, "tsnet backend: ")
	}
	p, err := proxy.New(logf, po)
	if err != nil {
		return err
	}
	logf("tsymbiote-proxy: config Secret %s/%s, state Secret %s/%s, control %s, auth key %s",
		c.namespace, c.configSecret, c.namespace, c.stateSecret, cmpOr(c.controlURL, "Tailscale's default"), bool2(c.authKey != "", "set", "not set"))
	if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func bool2(b bool, t, f string) string {
	if b {
		return t
	}
	return f
}
