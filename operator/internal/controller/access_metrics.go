package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Just-in-time access metrics.
var (
	accessTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tsymbiote_operator_access_requests_total",
		Help: "AccessRequests that entered each phase.",
	}, []string{"phase"})
	accessRequestsByPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tsymbiote_operator_access_requests",
		Help: "AccessRequests by phase, as of the last target reconcile.",
	}, []string{"phase"})
	accessGrantsActive = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tsymbiote_operator_access_grants_active",
		Help: "Grants whose login is in their policy group now.",
	})
	accessPolicyWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tsymbiote_operator_access_policy_writes_total",
		Help: "Policy edits by operation (grant, revoke) and result (written, unchanged, error).",
	}, []string{"op", "result"})
	accessPolicyConflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tsymbiote_operator_access_policy_conflicts_total",
		Help: "Policy writes refused because the policy changed since it was read, each retried.",
	})
	accessApprovalToWrite = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tsymbiote_operator_access_approval_to_policy_write_seconds",
		Help:    "Time from a request's approval to its login being written into the policy.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
	})
	accessNotifyFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tsymbiote_operator_access_notify_failures_total",
		Help: "Notifications given up after their retries.",
	})
)

func init() {
	metrics.Registry.MustRegister(accessTransitions, accessRequestsByPhase, accessGrantsActive,
		accessPolicyWrites, accessPolicyConflicts, accessApprovalToWrite, accessNotifyFailures)
}
