package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"tailscale.com/types/logger"
)

// serveDebug serves Go's profiles (/debug/pprof/) on addr, a loopback
// address, for measuring the daemon's memory and CPU per pod; it is off
// unless --debug-addr is set. The returned func stops it.
func serveDebug(logf logger.Logf, addr string) (stop func(), err error) {
	if err := checkLoopback(addr); err != nil {
		return nil, fmt.Errorf("--debug-addr: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No write timeout: a CPU profile or trace streams for its duration.
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	logf("debug: Go profiles on http://%s/debug/pprof/", ln.Addr().String())
	return func() { hs.Close() }, nil
}
