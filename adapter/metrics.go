package adapter

import (
	"context"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// metrics counts calls by method and outcome and times them. It wraps the
// authorizer, so refused calls show up as PermissionDenied.
type metrics struct {
	reg      *prometheus.Registry
	calls    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsymbiote_adapter_calls_total",
			Help: "gRPC calls by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tsymbiote_adapter_call_duration_seconds",
			Help:    "gRPC call latency by method (for streams, how long they stayed open).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12),
		}, []string{"method"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tsymbiote_adapter_calls_in_flight",
			Help: "gRPC calls being served now.",
		}, []string{"method"}),
	}
	m.reg.MustRegister(m.calls, m.latency, m.inFlight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(full string, t0 time.Time, err error) {
	method := path.Base(full)
	m.calls.WithLabelValues(method, status.Code(err).String()).Inc()
	m.latency.WithLabelValues(method).Observe(time.Since(t0).Seconds())
}

func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	g := m.inFlight.WithLabelValues(path.Base(info.FullMethod))
	g.Inc()
	defer g.Dec()
	t0 := time.Now()
	resp, err := h(ctx, req)
	m.observe(info.FullMethod, t0, err)
	return resp, err
}

func (m *metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	g := m.inFlight.WithLabelValues(path.Base(info.FullMethod))
	g.Inc()
	defer g.Dec()
	t0 := time.Now()
	err := h(srv, ss)
	m.observe(info.FullMethod, t0, err)
	return err
}
