package podbackend

import (
	"net/netip"
	"slices"
	"sync"

	"tailscale.com/types/logger"
	"tailscale.com/wgengine/router"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
)

// podRouter is the router.Router of one pod's engine. The stock Linux router
// owns table 52, a fixed rule set and iptables chains, so two backends using
// it on one host would overwrite each other; this one only touches the pod's
// own table, and only the routes through the pod's TUN.
type podRouter struct {
	logf logger.Logf
	pod  podnet.Pod

	mu        sync.Mutex
	routes    []netip.Prefix
	addrs     []netip.Prefix
	onAddrs   func([]netip.Prefix) // called when LocalAddrs change
	lastError error
}

func (r *podRouter) Up() error {
	return podnet.SetTUNUp(r.pod)
}

func (r *podRouter) Set(cfg *router.Config) error {
	if cfg == nil {
		cfg = &router.Config{}
	}
	routes := slices.Clone(cfg.Routes)
	slices.SortFunc(routes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	addrs := slices.Clone(cfg.LocalAddrs)

	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Equal(routes, r.routes) || r.lastError != nil {
		err := podnet.SetTUNRoutes(r.pod, routes)
		r.lastError = err
		if err != nil {
			return err
		}
		r.routes = routes
	}
	if !slices.Equal(addrs, r.addrs) {
		r.addrs = addrs
		if r.onAddrs != nil && len(addrs) > 0 {
			go r.onAddrs(addrs)
		}
	}
	return nil
}

func (r *podRouter) Close() error { return nil }
