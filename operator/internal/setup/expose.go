package setup

import (
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// ExposeConfig configures the controllers that expose Services, Ingresses
// and routes to the tailnet.
type ExposeConfig struct{}

// setupExpose registers the exposure controllers that cfg.Expose enables.
func setupExpose(mgr manager.Manager, cfg Config) error { return nil }
