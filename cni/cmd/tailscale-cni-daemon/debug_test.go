package main

import (
	"net/http"
	"testing"

	"tailscale.com/types/logger"
)

func TestServeDebug(t *testing.T) {
	for _, bad := range []string{"0.0.0.0:0", "10.0.0.1:6060", "nohost"} {
		if stop, err := serveDebug(logger.Discard, bad); err == nil {
			stop()
			t.Errorf("serveDebug(%q) served; want an error (loopback only)", bad)
		}
	}
	var addr string
	stop, err := serveDebug(func(format string, args ...any) {
		if len(args) == 1 {
			addr, _ = args[0].(string)
		}
	}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("heap profile: %s", resp.Status)
	}
}
