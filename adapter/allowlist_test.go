package adapter_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/adapter"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
)

// readOnlyLocalAPI is every LocalAPI request the adapter may make. Ping is
// the one POST; it sends probes and changes nothing.
var readOnlyLocalAPI = []string{
	"GET /localapi/v0/status",
	"GET /localapi/v0/prefs",
	"GET /localapi/v0/dns-config",
	"GET /localapi/v0/dns-osconfig",
	"GET /localapi/v0/dns-query",
	"GET /localapi/v0/serve-config",
	"GET /localapi/v0/whois",
	"GET /localapi/v0/derpmap",
	"GET /localapi/v0/logtap",
	"GET /localapi/v0/debug-bus-events",
	"POST /localapi/v0/ping",
}

// TestLocalAPIAllowlist puts a recording proxy between the adapter and a
// real tailscaled, calls every method with valid and invalid arguments,
// and checks that every request the adapter made is on the read-only list:
// the read-only property at the wire, not just in the daemon's state.
func TestLocalAPIAllowlist(t *testing.T) {
	d := tailscaledtest.Start(t, "allow")
	dir, err := os.MkdirTemp("", "proxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	proxySock := filepath.Join(dir, "p.sock")
	ln, err := net.Listen("unix", proxySock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(&url.URL{Scheme: "http", Host: r.In.Host}) },
		FlushInterval: -1, // the log and bus streams
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		}},
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method+" "+r.URL.Path]++
		mu.Unlock()
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })

	readyc := make(chan adapter.Ready, 1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- adapter.Run(ctx, logger.Discard, adapter.Config{
			AllowedTag: adapter.DefaultAllowedTag, HostnamePrefix: adapter.DefaultHostnamePrefix,
			Dev: true, Port: "0", Sockets: []string{proxySock},
			OnReady: func(r adapter.Ready) { readyc <- r },
		})
	}()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	r := <-readyc
	c := devClient(t, r.Addr.String())

	for _, cl := range everyCall("100.64.0.2", "100.64.0.2") {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		_ = cl.do(cctx, c) // outcomes vary on a daemon that is not logged in; the requests are what count
		ccancel()
	}
	mu.Lock()
	defer mu.Unlock()
	var got []string
	for k, n := range seen {
		got = append(got, k)
		if !slices.Contains(readOnlyLocalAPI, k) {
			t.Errorf("adapter made %d request(s) %q, not on the read-only list", n, k)
		}
	}
	sort.Strings(got)
	t.Logf("LocalAPI requests made: %s", strings.Join(got, ", "))
	if len(got) < 8 {
		t.Errorf("only %d distinct requests seen; the proxy is not in the path?", len(got))
	}
}
