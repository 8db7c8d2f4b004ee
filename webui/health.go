package webui

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"tailscale.com/types/logger"
)

// probeServer answers the kubelet's probes on the pod network (--health-addr),
// where the WebUI itself, which listens only on the tailnet, cannot be
// reached: /healthz while the process runs, /readyz once the WebUI has
// joined the tailnet and serves there. It says nothing else, so it needs no
// caller check.
type probeServer struct {
	ready atomic.Bool
	hs    *http.Server
	ln    net.Listener
}

// startProbes listens on addr and serves the probes until stop.
func startProbes(logf logger.Logf, addr string) (*probeServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--health-addr: %w", err)
	}
	p := &probeServer{ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !p.ready.Load() {
			http.Error(w, "not serving on the tailnet yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	p.hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := p.hs.Serve(ln); err != nil && err != http.ErrServerClosed {
			logf("probes: %v", err)
		}
	}()
	logf("probes on http://%s/healthz and /readyz", ln.Addr())
	return p, nil
}

// stop closes the listener; probes fail from then on, as they should for
// a WebUI that is shutting down.
func (p *probeServer) stop() {
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.hs.Shutdown(ctx)
}

func (p *probeServer) setReady() {
	if p != nil {
		p.ready.Store(true)
	}
}
