package adapter_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/tailcfg"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/adapter"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// BenchmarkOverhead is acceptance item 6: the latency the adapter adds over
// a direct LocalAPI call, for Status and a disco Ping of node-b, at p50.
// "localhost" is a --dev adapter (gRPC over loopback TCP); "tailnet" is the
// real path, a tsnet client through WireGuard to the adapter's tsnet node,
// which adds the tailnet's own round trip. Run with
//
//	go test -run '^$' -bench Overhead -benchtime 300x
func BenchmarkOverhead(b *testing.B) {
	w := newWorld(b, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	readyc := make(chan adapter.Ready, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- adapter.Run(ctx, logger.Discard, adapter.Config{
			AllowedTag: adapter.DefaultAllowedTag, HostnamePrefix: adapter.DefaultHostnamePrefix,
			Dev: true, Port: "0", Sockets: []string{w.a.Socket},
			OnReady: func(r adapter.Ready) { readyc <- r },
		})
	}()
	var dev adapterv1.AdapterServiceClient
	select {
	case r := <-readyc:
		dev = devClient(b, r.Addr.String())
	case err := <-errc:
		b.Fatal(err)
	}
	tailnet, _ := w.caller(b, "webui", "tag:tsymbiote-webui")
	lc := w.a.Client()
	peer := w.bIP.String()

	p50 := map[string]time.Duration{}
	measure := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			if err := f(); err != nil { // warm up connections and paths
				b.Fatal(err)
			}
			ds := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if err := f(); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(ds)
			p := ds[len(ds)/2]
			p50[name] = p
			b.ReportMetric(float64(p.Microseconds()), "p50-µs")
			b.ReportMetric(float64(ds[len(ds)*9/10].Microseconds()), "p90-µs")
		})
	}
	measure("Status/direct", func() error { _, err := lc.Status(ctx); return err })
	measure("Status/adapter-localhost", func() error { _, err := dev.Status(ctx, &adapterv1.StatusRequest{}); return err })
	measure("Status/adapter-tailnet", func() error { _, err := tailnet.Status(ctx, &adapterv1.StatusRequest{}); return err })

	ip := w.bIP
	ping := &adapterv1.PingRequest{Peer: peer, Type: adapterv1.PingType_PING_TYPE_DISCO}
	pingOK := func(r *adapterv1.PingResponse, err error) error {
		if err == nil && r.Succeeded != 1 {
			b.Fatalf("ping failed: %v", r)
		}
		return err
	}
	measure("Ping/direct", func() error {
		r, err := lc.PingWithOpts(ctx, ip, tailcfg.PingDisco, local.PingOpts{})
		if err == nil && r.Err != "" {
			b.Fatalf("ping: %s", r.Err)
		}
		return err
	})
	measure("Ping/adapter-localhost", func() error { return pingOK(dev.Ping(ctx, ping)) })
	measure("Ping/adapter-tailnet", func() error { return pingOK(tailnet.Ping(ctx, ping)) })

	for _, m := range []string{"Status", "Ping"} {
		d := p50[m+"/direct"]
		b.Logf("%s p50: direct LocalAPI %v; via adapter on localhost %v (adds %v); via adapter over the tailnet %v (adds %v)",
			m, d, p50[m+"/adapter-localhost"], p50[m+"/adapter-localhost"]-d, p50[m+"/adapter-tailnet"], p50[m+"/adapter-tailnet"]-d)
	}
}
