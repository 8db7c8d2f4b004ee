package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"tailscale.com/ipn"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
	"tsymbiote.dhouti.dev/operator/internal/testenv"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
	"tsymbiote.dhouti.dev/testkit/testca"
)

func TestMain(m *testing.M) { os.Exit(headscaletest.Main(m)) }

// tcpEcho serves an echo on addr until the test ends: it answers what it
// read once the client half-closes.
func tcpEcho(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte("echo:"), b...))
			}()
		}
	}()
	return ln
}

func httpBackend(t *testing.T, name string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s proto=%s", name, r.URL.Path, r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// runProxy runs a Proxy until the test ends (or stop is called) and waits
// until it is ready.
func runProxy(t testing.TB, o Options) (p *Proxy, stop func()) {
	t.Helper()
	p, err := New(logfPrefix(t, "proxy: "), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = p.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
			if runErr != nil {
				t.Errorf("Run: %v", runErr)
			}
		})
	}
	t.Cleanup(stop)
	start := time.Now()
	for !p.Ready() {
		select {
		case <-done:
			t.Fatalf("Run ended before ready: %v", runErr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Since(start) > 90*time.Second {
			t.Fatalf("proxy not ready after %v", time.Since(start))
		}
	}
	t.Logf("proxy ready after %v", time.Since(start).Round(time.Millisecond))
	return p, stop
}

func logfPrefix(t testing.TB, prefix string) func(string, ...any) {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() { mu.Lock(); done = true; mu.Unlock() })
	return func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Logf(prefix+f, a...)
		}
	}
}

// eventually calls f until it succeeds or the deadline passes.
func eventually(t testing.TB, what string, d time.Duration, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < d {
		if err = f(); err == nil {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: still failing after %v: %v", what, d, err)
	return 0
}

func counter(t *testing.T, p *Proxy, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := p.m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metric
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestProxy runs a proxy against a real Headscale and a real API server
// (envtest), with a tsnet client on the tailnet: TCP and UDP forwards, HTTPS
// routing with a certificate from the test's CA, a certificate rotated in
// the Secret while the proxy runs, the HTTP redirect, a subnet route to a
// loopback address, status annotations, and a restart that keeps the node.
func TestProxy(t *testing.T) {
	hs := headscaletest.Start(t, headscaletest.Options{})
	env := testenv.Start(t, testenv.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const ns = "default"
	kc, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	sc := kc.CoreV1().Secrets(ns)
	secrets := KubeSecrets(sc)

	echo := tcpEcho(t, "127.0.0.1:0")
	uecho := udpEcho(t)
	a, b := httpBackend(t, "A"), httpBackend(t, "B")
	// The subnet route's target: an address the test puts on lo (as
	// root), standing in for a cluster's service CIDR behind the router.
	// Not 127/8: netstack drops packets to loopback destinations as martians.
	subnet := netip.MustParsePrefix("198.18.77.0/24")
	subnetAddr := netip.MustParseAddr("198.18.77.1")

	ca := testca.New(t, "tsymbiote proxy test CA")
	const webHost = "web.example.test"
	crt1, key1 := ca.Issue(t, 1001, webHost)
	cfg := proxyconfig.Config{
		Generation: 1,
		Hostname:   "proxy-test",
		Tags:       []string{headscaletest.TagTest},
		Forwards: []proxyconfig.Forward{
			{Service: "default/echo", Protocol: "TCP", Port: 7000, Target: echo.Addr().String()},
			{Service: "default/uecho", Protocol: "UDP", Port: 7001, Target: uecho.LocalAddr().String()},
		},
		HTTP: &proxyconfig.HTTP{
			Routes: []proxyconfig.Route{
				{Host: webHost, Path: "/a", PathType: "Prefix", Backend: a, Service: "default/a"},
				{Host: webHost, Path: "/b", PathType: "Prefix", Backend: b, Service: "default/b"},
			},
			TLS:          []proxyconfig.TLS{{Hosts: []string{webHost}, CertKey: "tls-0.crt", KeyKey: "tls-0.key"}},
			RedirectHTTP: true,
		},
		AdvertiseRoutes: []netip.Prefix{subnet},
	}
	writeConfig := func(c proxyconfig.Config, crt, key []byte) {
		t.Helper()
		js, err := proxyconfig.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		data := map[string][]byte{proxyconfig.ConfigKey: js, "tls-0.crt": crt, "tls-0.key": key}
		s, err := sc.Get(ctx, "proxy-config", metav1.GetOptions{})
		if err != nil {
			if _, err := sc.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "proxy-config"}, Data: data}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			return
		}
		s.Data = data
		if _, err := sc.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(cfg, crt1, key1)
	if _, err := sc.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "proxy-state"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	key, err := hs.AuthKey(ctx, headscaletest.KeyOptions{Tags: []string{headscaletest.TagTest}})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Secrets: secrets, ConfigSecret: "proxy-config", StateSecret: "proxy-state",
		AuthKey: key, ControlURL: hs.URL, Dir: t.TempDir()}
	p, stop := runProxy(t, opts)

	// Status annotations.
	var ann map[string]string
	eventually(t, "status annotations", 30*time.Second, func() error {
		s, err := sc.Get(ctx, "proxy-state", metav1.GetOptions{})
		if err != nil {
			return err
		}
		ann = s.Annotations
		if ann[proxyconfig.AnnotationFQDN] == "" || ann[proxyconfig.AnnotationIPs] == "" || ann[proxyconfig.AnnotationDeviceID] == "" || ann[proxyconfig.AnnotationConfigGeneration] != "1" {
			return fmt.Errorf("annotations %v", ann)
		}
		if len(s.Data) == 0 {
			return errors.New("no node state in the state Secret")
		}
		return nil
	})
	fqdn, id := ann[proxyconfig.AnnotationFQDN], ann[proxyconfig.AnnotationDeviceID]
	ips := strings.Split(ann[proxyconfig.AnnotationIPs], ",")
	t.Logf("state Secret annotations: fqdn=%s ips=%v node=%s", fqdn, ips, id)
	if fqdn != "proxy-test.tsymbiote.test" {
		t.Errorf("fqdn %q, want proxy-test.tsymbiote.test", fqdn)
	}
	ip4 := ips[0]

	client, _ := hs.NewNode(t, headscaletest.NodeOptions{Hostname: "client", Tags: []string{headscaletest.TagTest}})
	lc, err := client.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.EditPrefs(ctx, &ipn.MaskedPrefs{RouteAllSet: true, Prefs: ipn.Prefs{RouteAll: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := headscaletest.WaitForPeer(ctx, client, "proxy-test"); err != nil {
		t.Fatal(err)
	}

	// TCP, by MagicDNS name, with a half-close.
	tcpRoundTrip := func(addr, msg string) error {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		c, err := client.Dial(dctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			return err
		}
		got, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if string(got) != "echo:"+msg {
			return fmt.Errorf("answer %q", got)
		}
		return nil
	}
	took := eventually(t, "TCP echo by MagicDNS name", 30*time.Second, func() error { return tcpRoundTrip(fqdn+":7000", "hello") })
	t.Logf("TCP echo through %s:7000 answered (first try +%v)", fqdn, took.Round(time.Millisecond))

	udpRoundTrip := func(addr, msg string) error {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		defer dcancel()
		c, err := client.Dial(dctx, "udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != msg {
			return fmt.Errorf("answer %q", buf[:n])
		}
		return nil
	}
	eventually(t, "UDP echo over IPv4", 30*time.Second, func() error { return udpRoundTrip(ip4+":7001", "ping4") })
	if len(ips) > 1 {
		eventually(t, "UDP echo over IPv6", 30*time.Second, func() error {
			return udpRoundTrip(net.JoinHostPort(ips[1], "7001"), "ping6")
		})
	}

	// HTTPS, verified against the test's CA, two paths to two backends.
	var servedSerial int64
	var serialMu sync.Mutex
	hc := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(addr)
				return client.Dial(ctx, network, net.JoinHostPort(ip4, port))
			},
			TLSClientConfig: &tls.Config{RootCAs: ca.Pool, VerifyConnection: func(cs tls.ConnectionState) error {
				serialMu.Lock()
				servedSerial = cs.PeerCertificates[0].SerialNumber.Int64()
				serialMu.Unlock()
				return nil
			}},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	get := func(url string) (int, string, http.Header, error) {
		res, err := hc.Get(url)
		if err != nil {
			return 0, "", nil, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return res.StatusCode, string(body), res.Header, err
	}
	for _, tt := range []struct{ path, want string }{
		{"/a", "A /a proto=https"},
		{"/a/x", "A /a/x proto=https"},
		{"/b", "B /b proto=https"},
	} {
		code, body, _, err := get("https://" + webHost + tt.path)
		if err != nil || code != http.StatusOK || body != tt.want {
			t.Errorf("GET https://%s%s = %d %q, %v; want 200 %q", webHost, tt.path, code, body, err, tt.want)
		}
	}
	if code, _, _, err := get("https://" + webHost + "/c"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET /c = %d, %v; want 404", code, err)
	}
	if servedSerial != 1001 {
		t.Errorf("served certificate serial %d, want 1001", servedSerial)
	}
	code, _, hdr, err := get("http://" + webHost + "/a?x=1")
	if err != nil || code != http.StatusPermanentRedirect || hdr.Get("Location") != "https://"+webHost+"/a?x=1" {
		t.Errorf("GET http:// = %d Location %q, %v; want 308 to https", code, hdr.Get("Location"), err)
	}

	// Rotation: a new certificate in the Secret, and port 80 routing
	// instead of redirecting, without a restart.
	crt2, key2 := ca.Issue(t, 1002, webHost)
	cfg.Generation = 2
	cfg.HTTP.RedirectHTTP = false
	writeConfig(cfg, crt2, key2)
	took = eventually(t, "rotated certificate served", 30*time.Second, func() error {
		if _, _, _, err := get("https://" + webHost + "/a"); err != nil {
			return err
		}
		serialMu.Lock()
		defer serialMu.Unlock()
		if servedSerial != 1002 {
			return fmt.Errorf("serial %d", servedSerial)
		}
		return nil
	})
	t.Logf("rotated certificate served %v after the Secret's update", took.Round(time.Millisecond))
	if code, body, _, err := get("http://" + webHost + "/b"); err != nil || code != http.StatusOK || body != "B /b proto=http" {
		t.Errorf("GET http:///b after RedirectHTTP=false = %d %q, %v", code, body, err)
	}

	// A broken config is reported and changes nothing.
	bad := cfg
	bad.Generation = 3
	writeConfig(bad, crt2, []byte("not a key"))
	eventually(t, "config error annotation", 30*time.Second, func() error {
		s, err := sc.Get(ctx, "proxy-state", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if e := s.Annotations[proxyconfig.AnnotationConfigError]; !strings.Contains(e, "tls-0.key") {
			return fmt.Errorf("config error annotation %q", e)
		}
		if g := s.Annotations[proxyconfig.AnnotationConfigGeneration]; g != "2" {
			return fmt.Errorf("generation %q, want 2 still", g)
		}
		return nil
	})
	if code, _, _, err := get("https://" + webHost + "/a"); err != nil || code != http.StatusOK {
		t.Errorf("after a broken config: GET /a = %d, %v", code, err)
	}

	// Subnet route: approved through the control-plane client, then the
	// client reaches an address behind the proxy through it.
	t.Run("subnet", func(t *testing.T) {
		testkit.Root(t)
		addLoopbackAddr(t, subnetAddr)
		subnetEcho := tcpEcho(t, netip.AddrPortFrom(subnetAddr, 0).String())
		subnetUDP := udpEchoAt(t, subnetAddr)
		cp, err := controlplane.New(t.Logf, controlplane.Config{HeadscaleURL: hs.URL, HeadscaleAPIKey: controlplane.Secret(hs.APIKey)})
		if err != nil {
			t.Fatal(err)
		}
		ra, err := controlplane.Routes(cp)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "route advertised", 30*time.Second, func() error {
			adv, _, err := ra.Routes(ctx, id)
			if err != nil {
				return err
			}
			if !slices.Contains(adv, subnet) {
				return fmt.Errorf("advertised %v", adv)
			}
			return nil
		})
		if err := ra.SetApprovedRoutes(ctx, id, []netip.Prefix{subnet}); err != nil {
			t.Fatal(err)
		}
		took = eventually(t, "client learns the route", 30*time.Second, func() error {
			st, err := lc.Status(ctx)
			if err != nil {
				return err
			}
			for _, peer := range st.Peer {
				if peer.HostName == "proxy-test" && peer.PrimaryRoutes != nil && slices.Contains(peer.PrimaryRoutes.AsSlice(), subnet) {
					return nil
				}
			}
			return errors.New("no peer routes " + subnet.String())
		})
		t.Logf("client has the route %v %v after approval", subnet, took.Round(time.Millisecond))
		before := counter(t, p, "tsymbiote_proxy_connections_total", map[string]string{"service": "subnet", "proto": "tcp"})
		eventually(t, "TCP through the subnet route", 30*time.Second, func() error { return tcpRoundTrip(subnetEcho.Addr().String(), "routed") })
		if after := counter(t, p, "tsymbiote_proxy_connections_total", map[string]string{"service": "subnet", "proto": "tcp"}); after <= before {
			t.Errorf("subnet TCP connections %v -> %v: the dial did not go through the router", before, after)
		}
		beforeU := counter(t, p, "tsymbiote_proxy_connections_total", map[string]string{"service": "subnet", "proto": "udp"})
		eventually(t, "UDP through the subnet route", 30*time.Second, func() error { return udpRoundTrip(subnetUDP.LocalAddr().String(), "routed-udp") })
		if after := counter(t, p, "tsymbiote_proxy_connections_total", map[string]string{"service": "subnet", "proto": "udp"}); after <= beforeU {
			t.Errorf("subnet UDP flows %v -> %v: the packet did not go through the router", beforeU, after)
		}

		// A config without the route withdraws it from the control plane.
		noRoutes := cfg
		noRoutes.Generation = 4
		noRoutes.AdvertiseRoutes = nil
		writeConfig(noRoutes, crt2, key2)
		took = eventually(t, "route withdrawn", 30*time.Second, func() error {
			adv, _, err := ra.Routes(ctx, id)
			if err != nil {
				return err
			}
			if slices.Contains(adv, subnet) {
				return fmt.Errorf("still advertised: %v", adv)
			}
			return nil
		})
		t.Logf("route withdrawn from Headscale %v after the config dropped it", took.Round(time.Millisecond))
	})

	// A new hostname renames the node in place: same node, new FQDN.
	renamed := cfg
	renamed.Generation = 5
	renamed.Hostname = "proxy-renamed"
	writeConfig(renamed, crt2, key2)
	took = eventually(t, "renamed", 30*time.Second, func() error {
		s, err := sc.Get(ctx, "proxy-state", metav1.GetOptions{})
		if err != nil {
			return err
		}
		a := s.Annotations
		if a[proxyconfig.AnnotationFQDN] != "proxy-renamed.tsymbiote.test" || a[proxyconfig.AnnotationDeviceID] != id {
			return fmt.Errorf("fqdn %s node %s", a[proxyconfig.AnnotationFQDN], a[proxyconfig.AnnotationDeviceID])
		}
		return nil
	})
	t.Logf("node %s renamed to proxy-renamed.tsymbiote.test %v after the config changed", id, took.Round(time.Millisecond))
	eventually(t, "TCP echo by the new name", 30*time.Second, func() error { return tcpRoundTrip("proxy-renamed.tsymbiote.test:7000", "renamed") })

	// Metrics and probes.
	hsrv := httptest.NewServer(p.healthHandler())
	defer hsrv.Close()
	for _, path := range []string{"/healthz", "/readyz"} {
		res, err := http.Get(hsrv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", path, res.Status)
		}
	}
	res, err := http.Get(hsrv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`tsymbiote_proxy_connections_total{proto="tcp",service="default/echo"}`,
		`tsymbiote_proxy_connections_total{proto="udp",service="default/uecho"}`,
		`tsymbiote_proxy_received_bytes_total{proto="tcp",service="default/echo"}`,
		`tsymbiote_proxy_sent_bytes_total{proto="http",service="default/a"}`,
		fmt.Sprintf("tsymbiote_proxy_config_generation %d", p.generation.Load()),
		`tsymbiote_proxy_config_errors_total 1`,
	} {
		if !bytes.Contains(mb, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, l := range strings.Split(string(mb), "\n") {
		if strings.HasPrefix(l, "tsymbiote_proxy_") {
			t.Logf("metric: %s", l)
		}
	}

	// A restarted proxy, without an auth key, is the same node.
	writeConfig(cfg, crt2, key2) // the good config again
	stop()
	opts.AuthKey = ""
	opts.Dir = t.TempDir() // nothing from the old working directory
	_, _ = runProxy(t, opts)
	eventually(t, "same node after a restart", 30*time.Second, func() error {
		s, err := sc.Get(ctx, "proxy-state", metav1.GetOptions{})
		if err != nil {
			return err
		}
		a := s.Annotations
		if a[proxyconfig.AnnotationDeviceID] != id || a[proxyconfig.AnnotationIPs] != strings.Join(ips, ",") {
			return fmt.Errorf("after restart node %s ips %s, want %s %v", a[proxyconfig.AnnotationDeviceID], a[proxyconfig.AnnotationIPs], id, ips)
		}
		return nil
	})
	eventually(t, "TCP echo after the restart", 60*time.Second, func() error { return tcpRoundTrip(ip4+":7000", "again") })
	t.Logf("restarted proxy is node %s at %v again", id, ips)
}

// addLoopbackAddr puts a /32 on lo until the test ends.
func addLoopbackAddr(t *testing.T, a netip.Addr) {
	t.Helper()
	pfx := netip.PrefixFrom(a, a.BitLen()).String()
	if out, err := exec.Command("ip", "addr", "add", pfx, "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add %s dev lo: %v: %s", pfx, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "addr", "del", pfx, "dev", "lo").CombinedOutput(); err != nil {
			t.Errorf("ip addr del %s dev lo: %v: %s", pfx, err, out)
		}
	})
}

// udpEchoAt answers every datagram to a:<port> with itself.
func udpEchoAt(t *testing.T, a netip.Addr) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo(buf[:n], from)
		}
	}()
	return c
}
