package proxy

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the proxy's Prometheus series, on a registry of its own (a
// process may run several proxies in tests). Safe for concurrent use.
type metrics struct {
	reg        *prometheus.Registry
	conns      *prometheus.CounterVec // service, proto
	bytesIn    *prometheus.CounterVec // service, proto: from tailnet clients to backends
	bytesOut   *prometheus.CounterVec // service, proto: from backends to tailnet clients
	errors     *prometheus.CounterVec // service, proto, kind
	requests   *prometheus.CounterVec // service, code (HTTP)
	generation prometheus.Gauge
	applyErrs  prometheus.Counter
}

func newMetrics() *metrics {
	const ns = "tsymbiote_proxy"
	m := &metrics{
		reg: prometheus.NewRegistry(),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_total",
			Help: "Connections (TCP), sessions (UDP) and requests (HTTP) accepted per Service."}, []string{"service", "proto"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "received_bytes_total",
			Help: "Bytes from tailnet clients forwarded to the Service."}, []string{"service", "proto"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sent_bytes_total",
			Help: "Bytes from the Service forwarded to tailnet clients."}, []string{"service", "proto"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "errors_total",
			Help: "Failures per Service: dial (backend unreachable), write, proxy (HTTP backend error)."}, []string{"service", "proto", "kind"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "http_requests_total",
			Help: "HTTP requests per Service and status code (service is empty for requests no rule matched)."}, []string{"service", "code"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "config_generation",
			Help: "Generation of the config last applied (-1 before the first)."}),
		applyErrs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "config_errors_total",
			Help: "Configs that could not be parsed or applied."}),
	}
	m.generation.Set(-1)
	m.reg.MustRegister(m.conns, m.bytesIn, m.bytesOut, m.errors, m.requests, m.generation, m.applyErrs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
