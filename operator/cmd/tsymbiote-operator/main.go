// The tsymbiote-operator command runs the TSymbiote Kubernetes operator: the
// mutating webhook that injects the adapter sidecar into labelled pods, the
// secrets controller that gives each of them an ephemeral auth key, and the
// TSymbiote controller that runs the WebUI as a StatefulSet.
//
// The control plane comes from the environment every TSymbiote daemon reads:
// HEADSCALE_URL and HEADSCALE_API_KEY, or TS_OAUTH_CLIENT_ID and
// TS_OAUTH_CLIENT_SECRET (or TS_API_KEY), and TS_CONTROL_URL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"tailscale.com/types/logger"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/certs"
	"tsymbiote.dhouti.dev/operator/internal/setup"
	"tsymbiote.dhouti.dev/operator/internal/sidecar"
)

func main() {
	if err := run(os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintf(os.Stderr, "tsymbiote-operator: %v\n", err)
		os.Exit(1)
	}
}

// run runs the operator with the command line args and the environment
// read by getenv, until a signal stops it. --help returns nil.
func run(args []string, getenv func(string) string) error {
	cmd, _ := newCommand(getenv)
	cmd.SetArgs(args)
	return cmd.Execute()
}

type options struct {
	metricsAddr, probeAddr string
	leaderElect            bool
	leaderElectionNS       string
	namespace              string
	webhookPort            int
	certDir, certMode      string
	certSecret             string
	webhookService         string
	webhookConfig          string
	adapter                sidecar.Config
	pullPolicy             string
	requests, limits       string
	adapterEnv             []string
	keyExpiry              time.Duration
	enableTSymbiote        bool
	expose                 exposeOptions // expose_flags.go
	access                 accessOptions // access_flags.go
	zap                    zap.Options
}

// newCommand is the operator's command line and the options its flags
// set. The flags are GNU style (--name=value); --kubeconfig and --zap-*
// are controller-runtime's own.
func newCommand(getenv func(string) string) (*cobra.Command, *options) {
	o := new(options)
	cmd := &cobra.Command{
		Use:   "tsymbiote-operator",
		Short: "Run the TSymbiote Kubernetes operator",
		Long: `Runs the TSymbiote Kubernetes operator: the mutating webhook that injects the
adapter sidecar into labelled pods, the secrets controller that gives each of
them an ephemeral auth key, and the TSymbiote controller that runs the WebUI.

The control plane comes from the environment: HEADSCALE_URL and
HEADSCALE_API_KEY, or TS_OAUTH_CLIENT_ID and TS_OAUTH_CLIENT_SECRET (or
TS_API_KEY), and TS_CONTROL_URL.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q", args)
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true, // main prints them, once
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(getenv)
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 disables it")
	f.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	f.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader so that only one replica runs the controllers")
	f.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "namespace of the leader election lease; --namespace when empty")
	f.StringVar(&o.namespace, "namespace", getenv("POD_NAMESPACE"), "the operator's namespace (default $POD_NAMESPACE)")
	f.IntVar(&o.webhookPort, "webhook-port", 9443, "port of the webhook server")
	f.StringVar(&o.certDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory holding the webhook server's tls.crt and tls.key")
	f.StringVar(&o.certMode, "cert-mode", "self", `"self": generate the serving certificate and keep the webhook's caBundle; "external": cert-manager (or you) provide both`)
	f.StringVar(&o.certSecret, "cert-secret-name", "tsymbiote-operator-webhook-cert", "secret holding the self-generated serving certificate")
	f.StringVar(&o.webhookService, "webhook-service-name", "tsymbiote-operator-webhook", "service in front of the webhook server")
	f.StringVar(&o.webhookConfig, "webhook-config-name", "tsymbiote-operator", "MutatingWebhookConfiguration whose caBundle the operator keeps")
	f.StringVar(&o.adapter.Image, "adapter-image", "", "image of the injected adapter sidecar (required)")
	f.StringVar(&o.pullPolicy, "adapter-image-pull-policy", "", "pull policy of the adapter sidecar: Always, IfNotPresent or Never")
	f.StringVar(&o.adapter.AllowedTag, "adapter-allowed-tag", "", "--allowed-tag passed to the adapter; the adapter's default when empty")
	f.StringVar(&o.requests, "adapter-requests", "cpu=10m,memory=32Mi", "resource requests of the adapter sidecar, e.g. cpu=10m,memory=32Mi")
	f.StringVar(&o.limits, "adapter-limits", "memory=128Mi", "resource limits of the adapter sidecar")
	f.StringArrayVar(&o.adapterEnv, "adapter-env", nil, "NAME=VALUE added to the adapter sidecar's environment (repeatable)")
	f.DurationVar(&o.keyExpiry, "key-expiry", time.Hour, "lifetime of each pod's adapter auth key; unused keys are re-minted before they expire")
	f.BoolVar(&o.enableTSymbiote, "enable-tsymbiote-controller", true, "run the TSymbiote (WebUI) controller; needs the CRD installed")
	o.expose.addFlags(f)
	o.access.addFlags(f)
	gofs := flag.NewFlagSet("", flag.ContinueOnError)
	config.RegisterFlags(gofs) // --kubeconfig; $KUBECONFIG or in-cluster otherwise
	o.zap.BindFlags(gofs)
	f.AddGoFlagSet(gofs)
	return cmd, o
}

// run checks the options, connects to the control plane and the cluster,
// and runs the manager until a signal stops it.
func (o *options) run(getenv func(string) string) error {
	if err := o.complete(); err != nil {
		return err
	}
	log := zap.New(zap.UseFlagOptions(&o.zap))
	ctrl.SetLogger(log)
	logf := logrLogf(log)
	cp, err := newControlPlane(logf, getenv)
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	if err := verifyControlPlane(ctx, cp); err != nil {
		return err
	}
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	scheme := setup.NewScheme()
	cm, err := o.servingCert(ctx, log, restCfg, scheme)
	if err != nil {
		return err
	}
	mgr, err := o.newManager(restCfg, scheme)
	if err != nil {
		return err
	}
	if err := o.register(mgr, cp, cm); err != nil {
		return err
	}
	log.Info("starting", "controlPlane", cp.Backend(), "adapterImage", o.adapter.Image, "certMode", o.certMode)
	return mgr.Start(ctx)
}

// complete fills the options derived from flags and checks them all,
// naming the flag to fix.
func (o *options) complete() error {
	o.adapter.ImagePullPolicy = corev1.PullPolicy(o.pullPolicy)
	var err error
	if o.adapter.Resources, err = sidecar.ParseResources(o.requests, o.limits); err != nil {
		return err
	}
	if o.adapter.Env, err = sidecar.ParseEnv(o.adapterEnv); err != nil {
		return err
	}
	if err := o.adapter.Validate(); err != nil {
		return err
	}
	if o.keyExpiry < 2*time.Minute {
		return fmt.Errorf("--key-expiry %v is too short (minimum 2m)", o.keyExpiry)
	}
	if o.certMode != "self" && o.certMode != "external" {
		return fmt.Errorf("--cert-mode %q: want self or external", o.certMode)
	}
	if o.namespace == "" {
		return errors.New("the operator's namespace is unknown: set --namespace or POD_NAMESPACE")
	}
	if o.leaderElectionNS == "" {
		o.leaderElectionNS = o.namespace
	}
	if err := o.expose.complete(o.namespace); err != nil {
		return err
	}
	return o.access.complete(o.namespace)
}

// newControlPlane is the control plane client the environment describes.
func newControlPlane(logf logger.Logf, getenv func(string) string) (controlplane.Client, error) {
	cfg, err := controlplane.ConfigFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	return controlplane.New(logf, cfg)
}

// verifyControlPlane makes one call, so that bad credentials stop the
// operator at start instead of at its first pod.
func verifyControlPlane(ctx context.Context, cp controlplane.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cp.Verify(ctx); err != nil {
		return fmt.Errorf("control plane (%s): %w", cp.Backend(), err)
	}
	return nil
}

// servingCert makes sure, with --cert-mode=self, that the webhook's serving
// certificate exists and is on disk before the webhook server starts, and
// returns the manager that keeps it and the webhook's caBundle current.
// It returns nil with --cert-mode=external.
func (o *options) servingCert(ctx context.Context, log logr.Logger, restCfg *rest.Config, scheme *runtime.Scheme) (*certs.Manager, error) {
	if o.certMode != "self" {
		return nil, nil
	}
	// The manager's cached client does not exist yet.
	direct, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	cm, err := certs.New(logrLogf(log), direct, certs.Options{
		Namespace: o.namespace, SecretName: o.certSecret, ServiceName: o.webhookService,
		WebhookConfigName: o.webhookConfig, CertDir: o.certDir,
	})
	if err != nil {
		return nil, err
	}
	if err := cm.EnsureCert(ctx); err != nil {
		return nil, err
	}
	if err := cm.EnsureCABundle(ctx); err != nil {
		// Not fatal: the webhook configuration may be applied after us;
		// cm.Run keeps trying.
		log.Error(err, "webhook caBundle not set yet; retrying in the background")
	}
	return cm, nil
}

// newManager is the controller-runtime manager: cache, leader election,
// metrics, probes and the webhook server.
func (o *options) newManager(restCfg *rest.Config, scheme *runtime.Scheme) (ctrl.Manager, error) {
	mgr, err := ctrl.NewManager(restCfg, setup.ManagerOptions(scheme, ctrl.Options{
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "tsymbiote-operator.tsymbiote.dhouti.dev",
		LeaderElectionNamespace: o.leaderElectionNS,
		// The manager ends as soon as it stops leading, so the next
		// leader does not overlap with it.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: webhook.NewServer(webhook.Options{
			Port:    o.webhookPort,
			CertDir: o.certDir,
		}),
	}))
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	return mgr, nil
}

// register adds the webhook, the controllers, the certificate keeper (on
// every replica, as every replica serves the webhook) and the probes to
// mgr.
func (o *options) register(mgr ctrl.Manager, cp controlplane.Client, cm *certs.Manager) error {
	if err := setup.Setup(mgr, setup.Config{
		ControlPlane: cp, Adapter: &o.adapter, KeyExpiry: o.keyExpiry, TSymbiote: o.enableTSymbiote,
		Expose: o.expose.config(), Access: o.access.config(),
	}); err != nil {
		return err
	}
	if cm != nil {
		if err := mgr.Add(setup.EveryReplica(func(ctx context.Context) error { return cm.Run(ctx, time.Minute) })); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker())
}

// logrLogf adapts the structured logger for packages that take a
// logger.Logf.
func logrLogf(l logr.Logger) logger.Logf {
	return func(format string, args ...any) { l.Info(fmt.Sprintf(format, args...)) }
}
