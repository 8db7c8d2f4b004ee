package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the exposure controllers, beside metrics.go's.
var (
	exposeReconciles = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tsymbiote_operator_expose_reconciles_total",
		Help: "Reconciles of the exposure controllers, by controller (service, ingress, subnetrouter) and result (ready, waiting, invalid, removed, error).",
	}, []string{"controller", "result"})
	proxyKeysMinted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tsymbiote_operator_proxy_keys_minted_total",
		Help: "Auth keys minted for tsymbiote-proxy nodes.",
	})
	proxyNodesDeleted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tsymbiote_operator_proxy_nodes_deleted_total",
		Help: "tsymbiote-proxy nodes deleted from the control plane (exposure removed, or tags changed).",
	})
	routesApproved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tsymbiote_operator_routes_approved_total",
		Help: "Changes of a subnet router's approved routes made through the control plane.",
	})
)

func init() {
	metrics.Registry.MustRegister(exposeReconciles, proxyKeysMinted, proxyNodesDeleted, routesApproved)
}

// countReconcile counts one reconcile of an exposure controller: its
// result, or "error" when err is set. A reconcile with neither (nothing to
// do) is not counted.
func countReconcile(controller, result string, err error) {
	if err != nil {
		result = "error"
	}
	if result != "" {
		exposeReconciles.WithLabelValues(controller, result).Inc()
	}
}
