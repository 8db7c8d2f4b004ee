package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// BenchmarkHTTP sends the same requests to a backend straight (loopback)
// and through a proxy on the tailnet (a tsnet client, a real Headscale, the
// proxy's port 80), and reports requests per second and MB/s of each. The
// proxy's Secrets come from client-go's fake clientset: the API server is
// not what is measured.
func BenchmarkHTTP(b *testing.B) {
	hs := headscaletest.Start(b, headscaletest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	payload := strings.Repeat("x", 1<<20)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/bytes/"))
		_, _ = io.WriteString(w, payload[:min(n, len(payload))])
	}))
	defer backend.Close()
	cfg := &proxyconfig.Config{Hostname: "bench-proxy", Generation: 1, HTTP: &proxyconfig.HTTP{Routes: []proxyconfig.Route{
		{Path: "/", Backend: strings.TrimPrefix(backend.URL, "http://"), Service: "default/bench"}}}}
	js, err := proxyconfig.Marshal(cfg)
	if err != nil {
		b.Fatal(err)
	}
	cs := fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "default"}, Data: map[string][]byte{proxyconfig.ConfigKey: js}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "state", Namespace: "default"}})
	key, err := hs.AuthKey(ctx, headscaletest.KeyOptions{Tags: []string{headscaletest.TagTest}})
	if err != nil {
		b.Fatal(err)
	}
	_, _ = runProxy(b, Options{Secrets: KubeSecrets(cs.CoreV1().Secrets("default")), ConfigSecret: "cfg", StateSecret: "state",
		AuthKey: key, ControlURL: hs.URL, Dir: b.TempDir()})
	client, _ := hs.NewNode(b, headscaletest.NodeOptions{Hostname: "bench-client", Tags: []string{headscaletest.TagTest}})
	peer, err := headscaletest.WaitForPeer(ctx, client, "bench-proxy")
	if err != nil {
		b.Fatal(err)
	}
	proxyAddr := net.JoinHostPort(peer.TailscaleIPs[0].String(), "80")
	viaTailnet := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return client.Dial(ctx, network, proxyAddr)
		},
		MaxIdleConnsPerHost: 4,
	}}
	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	fetch := func(b *testing.B, c *http.Client, url string, size int) {
		res, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || n != int64(size) {
			b.Fatalf("GET %s: %d, %d bytes, %v", url, res.StatusCode, n, err)
		}
	}
	// The first request through the tailnet waits for WireGuard's handshake.
	eventually(b, "first request through the proxy", 60*time.Second, func() error {
		res, err := viaTailnet.Get("http://bench-proxy/bytes/1")
		if err != nil {
			return err
		}
		res.Body.Close()
		return nil
	})
	for _, size := range []int{64, 1 << 20} {
		for _, path := range []struct {
			name string
			c    *http.Client
			base string
		}{
			{"direct", direct, backend.URL},
			{"proxy", viaTailnet, "http://bench-proxy.tsymbiote.test"},
		} {
			b.Run(fmt.Sprintf("%s/%dB", path.name, size), func(b *testing.B) {
				url := fmt.Sprintf("%s/bytes/%d", path.base, size)
				b.SetBytes(int64(size))
				n := 0
				start := time.Now()
				for b.Loop() {
					fetch(b, path.c, url, size)
					n++
				}
				el := time.Since(start)
				b.ReportMetric(float64(n)/el.Seconds(), "req/s")
				b.Logf("%s, %d B responses: %d requests in %v: %.0f req/s, %.1f MB/s", path.name, size, n, el.Round(time.Millisecond),
					float64(n)/el.Seconds(), float64(n)*float64(size)/el.Seconds()/1e6)
			})
		}
	}
}
