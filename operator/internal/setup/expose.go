package setup

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"tsymbiote.dhouti.dev/operator/internal/controller"
)

// ExposeConfig configures the controllers that expose Services, Ingresses
// and routes to the tailnet.
type ExposeConfig struct {
	// Proxy is what every proxy runs with; Proxy.Namespace is the
	// operator's.
	Proxy controller.ProxyOptions
	// Services, Ingresses and SubnetRouters turn each controller on, so
	// that the operator can run beside the official Tailscale operator.
	Services, Ingresses, SubnetRouters bool
}

// setupExpose registers the exposure controllers that cfg.Expose enables.
func setupExpose(mgr manager.Manager, cfg Config) error {
	e := cfg.Expose
	if !e.Services && !e.Ingresses && !e.SubnetRouters {
		return nil
	}
	if e.Proxy.Image == "" {
		return errors.New("the exposure controllers need the proxy image (--proxy-image)")
	}
	if e.Proxy.Namespace == "" {
		return errors.New("the exposure controllers need the operator's namespace")
	}
	rec := mgr.GetEventRecorderFor(controller.FieldOwner)
	if e.Services {
		if err := (&controller.ServiceReconciler{
			Client: mgr.GetClient(), ControlPlane: cfg.ControlPlane, Recorder: rec, Proxy: e.Proxy,
		}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the service controller: %w", err)
		}
	}
	if e.Ingresses {
		tls, err := tlsSecretCache(mgr)
		if err != nil {
			return err
		}
		if err := (&controller.IngressReconciler{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), TLSSecrets: tls,
			ControlPlane: cfg.ControlPlane, Recorder: rec, Proxy: e.Proxy,
		}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the ingress controller: %w", err)
		}
	}
	if e.SubnetRouters {
		if err := (&controller.SubnetRouterReconciler{
			Client: mgr.GetClient(), ControlPlane: cfg.ControlPlane, Recorder: rec, Proxy: e.Proxy,
		}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the subnet router controller: %w", err)
		}
	}
	return nil
}

// tlsSecretCache is a second cache, beside the manager's, that holds only
// the Secrets Ingresses name for TLS. The manager's cache holds only the
// operator's own Secrets (ManagerOptions), and widening it would hold every
// Secret of the cluster; instead the ingress controller labels each Secret
// an Ingress names with controller.LabelIngressTLS (metadata only, which
// cert-manager keeps when it renews), and this cache watches that label, so
// that a rotated certificate is copied to the proxy as soon as it changes.
func tlsSecretCache(mgr manager.Manager) (cache.Cache, error) {
	req, err := labels.NewRequirement(controller.LabelIngressTLS, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(),
		Mapper: mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.NewSelector().Add(*req)},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the TLS secret cache: %w", err)
	}
	if err := mgr.Add(c); err != nil {
		return nil, err
	}
	return c, nil
}
