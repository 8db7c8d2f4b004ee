package webui

import (
	"context"
	"net/http"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
)

// TestProbes shows the kubelet's view of a WebUI run with --health-addr:
// alive from the start, ready once it serves (here with --dev and an
// adapter given, so without a tailnet), and neither once it stops.
func TestProbes(t *testing.T) {
	addr := testkit.FreeAddr(t)
	ready := make(chan struct{})
	cfg := Config{
		AdapterPort: "3621", HostnamePrefix: "tsymbiote-webui", Port: "0", Dev: true,
		Adapters: []string{"127.0.0.1:9"}, HealthAddr: addr, quiet: true,
		OnReady: func(Ready) { close(ready) },
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, t.Logf, cfg) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run never served")
	}
	base := "http://" + addr
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/healthz", http.StatusOK},
		{"/readyz", http.StatusOK},
		{"/api/graph", http.StatusNotFound}, // nothing but the probes
	} {
		if got := httpStatus(t, base+tc.path); got != tc.want {
			t.Errorf("serving: GET %s = %d, want %d", tc.path, got, tc.want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if res, err := http.Get(base + "/healthz"); err == nil {
		res.Body.Close()
		t.Error("probes still answer after Run returned")
	}
}

// TestProbesBeforeReady: until the WebUI serves, /readyz says so.
func TestProbesBeforeReady(t *testing.T) {
	p, err := startProbes(t.Logf, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	base := "http://" + p.ln.Addr().String()
	for _, tc := range []struct {
		ready      bool
		path       string
		wantStatus int
	}{
		{false, "/healthz", http.StatusOK},
		{false, "/readyz", http.StatusServiceUnavailable},
		{true, "/readyz", http.StatusOK},
	} {
		if tc.ready {
			p.setReady()
		}
		if got := httpStatus(t, base+tc.path); got != tc.wantStatus {
			t.Errorf("ready=%v: GET %s = %d, want %d", tc.ready, tc.path, got, tc.wantStatus)
		}
	}
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
