// Package setup wires the operator's webhook and controllers into a
// controller-runtime manager. The command and the tests share it, so that
// the tests run exactly what the command runs.
package setup

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
	"tsymbiote.dhouti.dev/operator/internal/controller"
	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	podwebhook "tsymbiote.dhouti.dev/operator/internal/webhook"
	"tsymbiote.dhouti.dev/proto/contract"
)

// NewScheme holds the built-in types and the TSymbiote API.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	addAccessTypes(s)
	return s
}

// ManagerOptions narrows the manager's cache to the pods that opt in and
// the Secrets the operator owns, so that it does not hold every pod and
// Secret of the cluster in memory.
func ManagerOptions(scheme *runtime.Scheme, o manager.Options) manager.Options {
	o.Scheme = scheme
	o.Cache.ByObject = map[client.Object]cache.ByObject{
		&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{contract.LabelSecretInjection: contract.InjectionEnabled})},
		&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{
			contract.LabelManagedBy: controller.ManagedByValue,
		})},
	}
	return o
}

// Config is what Setup needs besides the manager.
type Config struct {
	ControlPlane controlplane.Client
	Adapter      *sidecar.Config
	KeyExpiry    time.Duration // of adapter keys; the controller's default when zero
	TSymbiote    bool          // run the TSymbiote controller
	// PodKey, when set, is used as the secrets controller (tests shorten
	// its timings); its Client and ControlPlane are filled in.
	PodKey *controller.PodKeyReconciler
	// TSymbioteRecheck overrides how often auth Secrets are re-read.
	TSymbioteRecheck time.Duration
	// Expose configures the Service, Ingress and subnet router
	// controllers (expose.go).
	Expose ExposeConfig
	// Access configures the just-in-time access controllers and webhook
	// (access.go).
	Access AccessConfig
}

// Setup registers the webhook and the controllers with mgr.
func Setup(mgr manager.Manager, cfg Config) error {
	cp, adapter := cfg.ControlPlane, cfg.Adapter
	mgr.GetWebhookServer().Register(podwebhook.Path, &webhook.Admission{
		Handler: podwebhook.NewPodInjector(adapter, admission.NewDecoder(mgr.GetScheme())),
	})
	pk := cfg.PodKey
	if pk == nil {
		pk = &controller.PodKeyReconciler{KeyExpiry: cfg.KeyExpiry}
	}
	pk.Client, pk.ControlPlane = mgr.GetClient(), cp
	if err := pk.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the secrets controller: %w", err)
	}
	if cfg.TSymbiote {
		if err := (&controller.TSymbioteReconciler{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), ControlPlane: cp, Recheck: cfg.TSymbioteRecheck,
			Recorder: mgr.GetEventRecorderFor(controller.FieldOwner),
		}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the TSymbiote controller: %w", err)
		}
	}
	if err := setupExpose(mgr, cfg); err != nil {
		return err
	}
	return setupAccess(mgr, cfg)
}

// EveryReplica wraps f as a runnable that runs on every replica, not only
// on the leader.
func EveryReplica(f func(context.Context) error) manager.Runnable { return everyReplica(f) }

type everyReplica func(context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }
func (everyReplica) NeedLeaderElection() bool          { return false }
