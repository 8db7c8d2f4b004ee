package daemon

import (
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"tsymbiote.dhouti.dev/cni/internal/cnierr"
)

// Metrics are the daemon's Prometheus metrics.
type Metrics struct {
	reg      *prometheus.Registry
	latency  *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	removed  *prometheus.CounterVec
	dns      *prometheus.CounterVec
	podsFunc func() map[string]int

	poolTakes        *prometheus.CounterVec
	poolRefillErrors prometheus.Counter
	poolRenameErrors prometheus.Counter
	poolReleased     prometheus.Counter
	poolWaits        *prometheus.CounterVec
	poolWaitSeconds  prometheus.Histogram
	poolFunc         func() PoolStatus
}

// NewMetrics registers the daemon's metrics in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tailscale_cni_op_duration_seconds",
		Help:    "Duration of CNI operations (add, del, check) as the daemon served them.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60},
	}, []string{"op"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailscale_cni_errors_total",
		Help: "Failed CNI operations by operation and kind (the CNI error code's name).",
	}, []string{"op", "kind"})
	m.removed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailscale_cni_removed_total",
		Help: "Attachments removed without a DEL: by the runtime's GC (by=gc) or the daemon's sweep of pods whose netns is gone (by=sweep).",
	}, []string{"by"})
	m.dns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailscale_cni_dns_queries_total",
		Help: "Pods' DNS queries: answered from the tailnet (tailnet), forwarded to the cluster DNS (forwarded), or failed.",
	}, []string{"answer"})
	m.reg.MustRegister(m.removed, m.dns)
	m.poolTakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailscale_cni_pool_takes_total",
		Help: "ADDs by what the node pool did for them: hit (the pod took a pool node), miss_empty (no pool node was ready), miss_tags (the pod's tags are not the daemon's).",
	}, []string{"result"})
	m.poolRefillErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tailscale_cni_pool_refill_errors_total",
		Help: "Pool nodes that failed to start (control plane unreachable, registration timed out, ...); the pool retries with backoff.",
	})
	m.poolRenameErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tailscale_cni_pool_rename_errors_total",
		Help: "Failed attempts to rename a pod's pool node to the pod's hostname; retried with backoff.",
	})
	m.poolReleased = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tailscale_cni_pool_released_total",
		Help: "Pool nodes deleted because the pool, grown by a burst of ADDs, shrank back to its size after --pool-idle without ADDs.",
	})
	m.poolWaits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailscale_cni_pool_waits_total",
		Help: "ADDs that found no pool node to take and waited for a starting one due sooner than the slow path: served (took it; counted as a hit too) or timeout (took the slow path; counted as miss_empty too).",
	}, []string{"result"})
	m.poolWaitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tailscale_cni_pool_wait_seconds",
		Help:    "How long ADDs waited for a starting pool node (tailscale_cni_pool_waits_total).",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30},
	})
	poolTarget := prometheus.NewDesc("tailscale_cni_pool_target", "How many nodes the pool wants now: its size, more while ADDs find it empty (up to tailscale_cni_pool_max).", nil, nil)
	poolMax := prometheus.NewDesc("tailscale_cni_pool_max", "How far the pool may grow during a burst of ADDs (--pool-max).", nil, nil)
	m.reg.MustRegister(m.poolReleased, m.poolWaits, m.poolWaitSeconds,
		collectorFunc{desc: poolTarget, collect: func(ch chan<- prometheus.Metric) {
			if m.poolFunc != nil {
				ch <- prometheus.MustNewConstMetric(poolTarget, prometheus.GaugeValue, float64(m.poolFunc().Target))
			}
		}},
		collectorFunc{desc: poolMax, collect: func(ch chan<- prometheus.Metric) {
			if m.poolFunc != nil {
				ch <- prometheus.MustNewConstMetric(poolMax, prometheus.GaugeValue, float64(m.poolFunc().Max))
			}
		}})
	poolNodes := prometheus.NewDesc("tailscale_cni_pool_nodes", "Pool nodes not yet taken by a pod, by state (ready, starting).", []string{"state"}, nil)
	poolSize := prometheus.NewDesc("tailscale_cni_pool_size", "The pool's configured size (--pool-size).", nil, nil)
	m.reg.MustRegister(m.poolTakes, m.poolRefillErrors, m.poolRenameErrors,
		collectorFunc{desc: poolNodes, collect: func(ch chan<- prometheus.Metric) {
			if m.poolFunc == nil {
				return
			}
			st := m.poolFunc()
			ch <- prometheus.MustNewConstMetric(poolNodes, prometheus.GaugeValue, float64(st.Ready), "ready")
			ch <- prometheus.MustNewConstMetric(poolNodes, prometheus.GaugeValue, float64(st.Starting), "starting")
		}},
		collectorFunc{desc: poolSize, collect: func(ch chan<- prometheus.Metric) {
			if m.poolFunc != nil {
				ch <- prometheus.MustNewConstMetric(poolSize, prometheus.GaugeValue, float64(m.poolFunc().Size))
			}
		}})
	pods := prometheus.NewDesc("tailscale_cni_pods", "Pods by the state of their tailnet node.", []string{"state"}, nil)
	m.reg.MustRegister(m.latency, m.errors, collectorFunc{desc: pods, collect: func(ch chan<- prometheus.Metric) {
		if m.podsFunc == nil {
			return
		}
		for st, n := range m.podsFunc() {
			ch <- prometheus.MustNewConstMetric(pods, prometheus.GaugeValue, float64(n), st)
		}
	}})
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

func (m *Metrics) observe(op string, took time.Duration, err error) {
	m.latency.WithLabelValues(op).Observe(took.Seconds())
	if err != nil {
		m.errors.WithLabelValues(op, kindName(cnierr.CodeOf(err))).Inc()
	}
}

func (m *Metrics) dnsQuery(kind string) { m.dns.WithLabelValues(kind).Inc() }

func kindName(code uint32) string {
	switch code {
	case cnierr.InvalidEnv:
		return "invalid_env"
	case cnierr.InvalidNetConf:
		return "invalid_netconf"
	case cnierr.UnknownContainer:
		return "unknown_container"
	case cnierr.IOFailure:
		return "io"
	case cnierr.TryAgainLater:
		return "control_plane_unreachable"
	case cnierr.ControlPlaneRefused:
		return "control_plane_refused"
	case cnierr.NodeNotReady:
		return "node_not_ready"
	}
	return "internal"
}

// Handler serves /metrics and /healthz. Health is the daemon's readiness
// to ADD pods.
func (m *Metrics) Handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	// Profiles, on the same loopback-only listener: memory per pod is the
	// daemon's main cost and worth looking at in place.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
		if m.poolFunc != nil {
			_, _ = w.Write([]byte(m.poolFunc().String() + "\n"))
		}
	})
	return mux
}
