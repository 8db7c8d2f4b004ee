package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Operator metrics, served with controller-runtime's on the manager's
// metrics endpoint.
var (
	keysMinted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tsymbiote_operator_adapter_keys_minted_total",
		Help: "Adapter auth keys minted, by reason: new (a pod's first key) or renew (an unused key about to expire).",
	}, []string{"reason"})
	nodesDeleted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tsymbiote_operator_adapter_nodes_deleted_total",
		Help: "Adapter nodes deleted from the control plane after their pod was deleted.",
	})
	controlPlaneErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tsymbiote_operator_control_plane_errors_total",
		Help: "Failed control plane calls, by operation.",
	}, []string{"op"})
)

func init() {
	metrics.Registry.MustRegister(keysMinted, nodesDeleted, controlPlaneErrors)
}
