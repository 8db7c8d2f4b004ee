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
	corev1 "k8s.io/api/core/v1"
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
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "tsymbiote-operator: %v\n", err)
		os.Exit(1)
	}
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
	keyExpiry              time.Duration
	enableTSymbiote        bool
}

func run(args []string, getenv func(string) string) error {
	var o options
	fs := flag.NewFlagSet("tsymbiote-operator", flag.ContinueOnError)
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 disables it")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader so that only one replica runs the controllers")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "namespace of the leader election lease; --namespace when empty")
	fs.StringVar(&o.namespace, "namespace", getenv("POD_NAMESPACE"), "the operator's namespace (default $POD_NAMESPACE)")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "port of the webhook server")
	fs.StringVar(&o.certDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory holding the webhook server's tls.crt and tls.key")
	fs.StringVar(&o.certMode, "cert-mode", "self", `"self": generate the serving certificate and keep the webhook's caBundle; "external": cert-manager (or you) provide both`)
	fs.StringVar(&o.certSecret, "cert-secret-name", "tsymbiote-operator-webhook-cert", "secret holding the self-generated serving certificate")
	fs.StringVar(&o.webhookService, "webhook-service-name", "tsymbiote-operator-webhook", "service in front of the webhook server")
	fs.StringVar(&o.webhookConfig, "webhook-config-name", "tsymbiote-operator", "MutatingWebhookConfiguration whose caBundle the operator keeps")
	fs.StringVar(&o.adapter.Image, "adapter-image", "", "image of the injected adapter sidecar (required)")
	fs.StringVar(&o.pullPolicy, "adapter-image-pull-policy", "", "pull policy of the adapter sidecar: Always, IfNotPresent or Never")
	fs.StringVar(&o.adapter.AllowedTag, "adapter-allowed-tag", "", "--allowed-tag passed to the adapter; the adapter's default when empty")
	fs.StringVar(&o.requests, "adapter-requests", "cpu=10m,memory=32Mi", "resource requests of the adapter sidecar, e.g. cpu=10m,memory=32Mi")
	fs.StringVar(&o.limits, "adapter-limits", "memory=128Mi", "resource limits of the adapter sidecar")
	fs.DurationVar(&o.keyExpiry, "key-expiry", time.Hour, "lifetime of each pod's adapter auth key; unused keys are re-minted before they expire")
	fs.BoolVar(&o.enableTSymbiote, "enable-tsymbiote-controller", true, "run the TSymbiote (WebUI) controller; needs the CRD installed")
	config.RegisterFlags(fs) // --kubeconfig; $KUBECONFIG or in-cluster otherwise
	zopts := zap.Options{}
	zopts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.adapter.ImagePullPolicy = corev1.PullPolicy(o.pullPolicy)
	var err error
	if o.adapter.Resources, err = sidecar.ParseResources(o.requests, o.limits); err != nil {
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

	log := zap.New(zap.UseFlagOptions(&zopts))
	ctrl.SetLogger(log)
	logf := logrLogf(log)

	cpCfg, err := controlplane.ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	cp, err := controlplane.New(logf, cpCfg)
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = cp.Verify(vctx)
	cancel()
	if err != nil {
		return fmt.Errorf("control plane (%s): %w", cp.Backend(), err)
	}

	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	scheme := setup.NewScheme()
	var cm *certs.Manager
	if o.certMode == "self" {
		direct, err := client.New(restCfg, client.Options{Scheme: scheme})
		if err != nil {
			return err
		}
		cm, err = certs.New(logf, direct, certs.Options{
			Namespace: o.namespace, SecretName: o.certSecret, ServiceName: o.webhookService,
			WebhookConfigName: o.webhookConfig, CertDir: o.certDir,
		})
		if err != nil {
			return err
		}
		if err := cm.EnsureCert(ctx); err != nil {
			return err
		}
		if err := cm.EnsureCABundle(ctx); err != nil {
			// Not fatal: the webhook configuration may be applied after us.
			log.Error(err, "webhook caBundle not set yet; retrying in the background")
		}
	}

	leNS := o.leaderElectionNS
	if leNS == "" {
		leNS = o.namespace
	}
	mgr, err := ctrl.NewManager(restCfg, setup.ManagerOptions(scheme, ctrl.Options{
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "tsymbiote-operator.tsymbiote.dhouti.dev",
		LeaderElectionNamespace: leNS,
		// The manager ends as soon as it stops leading, so the next
		// leader does not overlap with it.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: webhook.NewServer(webhook.Options{
			Port:    o.webhookPort,
			CertDir: o.certDir,
		}),
	}))
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	if err := setup.Setup(mgr, setup.Config{
		ControlPlane: cp, Adapter: &o.adapter, KeyExpiry: o.keyExpiry, TSymbiote: o.enableTSymbiote,
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
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	log.Info("starting", "controlPlane", cp.Backend(), "adapterImage", o.adapter.Image, "certMode", o.certMode)
	return mgr.Start(ctx)
}

// logrLogf adapts the structured logger for packages that take a
// logger.Logf.
func logrLogf(l logr.Logger) logger.Logf {
	return func(format string, args ...any) { l.Info(fmt.Sprintf(format, args...)) }
}
