package webui

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// metrics are the WebUI's Prometheus metrics, in their own registry so
// that tests can make several servers in one process.
type metrics struct {
	reg           *prometheus.Registry
	fanouts       *prometheus.CounterVec
	fanoutSeconds *prometheus.HistogramVec
	calls         *prometheus.CounterVec
	callSeconds   *prometheus.HistogramVec
	adapters      prometheus.Gauge
	requests      *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		fanouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsymbiote_webui_fanouts_total",
			Help: "Fan-outs finished, by kind (ping, dns) and outcome (completed, canceled).",
		}, []string{"kind", "outcome"}),
		fanoutSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tsymbiote_webui_fanout_duration_seconds",
			Help:    "Time from the start of a fan-out to its last result.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}, []string{"kind"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsymbiote_webui_adapter_calls_total",
			Help: "Calls to adapters, by adapter, method and outcome (a gRPC code).",
		}, []string{"adapter", "method", "outcome"}),
		callSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tsymbiote_webui_adapter_call_duration_seconds",
			Help:    "Latency of calls to adapters, by method.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"method"}),
		adapters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tsymbiote_webui_adapters",
			Help: "Adapters discovered at the last refresh.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsymbiote_webui_http_requests_total",
			Help: "Browser requests, by outcome (allowed, forbidden, unidentified).",
		}, []string{"outcome"}),
	}
	m.reg.MustRegister(m.fanouts, m.fanoutSeconds, m.calls, m.callSeconds, m.adapters, m.requests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func shortMethod(full string) string {
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '/' {
			return full[i+1:]
		}
	}
	return full
}

func (m *metrics) unaryClient(adapter string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		mm := shortMethod(method)
		m.calls.WithLabelValues(adapter, mm, status.Code(err).String()).Inc()
		m.callSeconds.WithLabelValues(mm).Observe(time.Since(start).Seconds())
		return err
	}
}

func (m *metrics) streamClient(adapter string) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		m.calls.WithLabelValues(adapter, shortMethod(method), status.Code(err).String()).Inc()
		return s, err
	}
}

func promHandler(m *metrics) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
