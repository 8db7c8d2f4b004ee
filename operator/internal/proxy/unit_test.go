package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"tailscale.com/ipn"
	"tailscale.com/tstest"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
	"tsymbiote.dhouti.dev/testkit/testca"
)

func TestRouteTable(t *testing.T) {
	routes := []proxyconfig.Route{
		{Host: "", Path: "/", PathType: "Prefix", Backend: "any-root:80"},
		{Host: "", Path: "/api", PathType: "Prefix", Backend: "any-api:80"},
		{Host: "", Path: "/api/v2/", PathType: "ImplementationSpecific", Backend: "any-api-v2:80"},
		{Host: "", Path: "/api/exact", PathType: "Exact", Backend: "any-exact:80"},
		{Host: "", Path: "/api/exact", PathType: "Prefix", Backend: "any-exact-prefix:80"},
		{Host: "app.example.com", Path: "/static", PathType: "Prefix", Backend: "app-static:80"},
		{Host: "app.example.com", Path: "/", PathType: "Exact", Backend: "app-home:80"},
		{Host: "*.example.com", Path: "/", PathType: "Prefix", Backend: "wild:80"},
		{Host: "dup.example.com", Path: "/x", Backend: "first:80"},
		{Host: "dup.example.com", Path: "/x", Backend: "second:80"},
	}
	tbl := newRouteTable(routes, nil)
	tests := []struct {
		host, path string
		want       string // backend, "" for none
	}{
		{"other.test", "/", "any-root:80"},
		{"other.test", "", "any-root:80"},
		{"other.test", "/apix", "any-root:80"}, // prefix matches whole elements
		{"other.test", "/api", "any-api:80"},
		{"other.test", "/api/", "any-api:80"},
		{"other.test", "/api/v1", "any-api:80"},
		{"other.test", "/api/v2", "any-api-v2:80"}, // trailing slash of the rule ignored
		{"other.test", "/api/v2/x", "any-api-v2:80"},
		{"other.test", "/api/exact", "any-exact:80"}, // Exact before Prefix of the same path
		{"other.test", "/api/exact/sub", "any-exact-prefix:80"},
		{"app.example.com", "/", "app-home:80"},
		{"APP.example.com.", "/", "app-home:80"},
		{"app.example.com", "/static/a.css", "app-static:80"},
		{"app.example.com", "/other", ""}, // the host has rules: no fallback to any
		{"foo.example.com", "/anything", "wild:80"},
		{"a.b.example.com", "/", "any-root:80"}, // a wildcard covers one label
		{"example.com", "/", "any-root:80"},
		{"dup.example.com", "/x", "first:80"},
	}
	for _, tt := range tests {
		got := ""
		if r := tbl.match(tt.host, tt.path); r != nil {
			got = r.backend
		}
		if got != tt.want {
			t.Errorf("match(%q, %q) = %q, want %q", tt.host, tt.path, got, tt.want)
		}
	}
	if r := newRouteTable(nil, nil).match("x", "/"); r != nil {
		t.Errorf("empty table matched %+v", r)
	}
}

// testCert makes a certificate for names, as PEM, signed by a CA of its
// own (these tests only load and pick certificates, never verify them).
func testCert(t testing.TB, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	return testca.New(t, "tsymbiote proxy unit test CA").Issue(t, time.Now().UnixNano(), names...)
}

func TestCerts(t *testing.T) {
	aCert, aKey := testCert(t, "a.example.com")
	wCert, wKey := testCert(t, "*.wild.test")
	data := map[string][]byte{"a.crt": aCert, "a.key": aKey, "w.crt": wCert, "w.key": wKey}
	cfg := []proxyconfig.TLS{
		{Hosts: []string{"a.example.com"}, CertKey: "a.crt", KeyKey: "a.key"},
		{Hosts: []string{"*.wild.test"}, CertKey: "w.crt", KeyKey: "w.key"},
	}
	cs, err := loadCerts(cfg, data)
	if err != nil {
		t.Fatal(err)
	}
	cn := func(c *tls.Certificate) string {
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.Subject.CommonName
	}
	for _, tt := range []struct {
		sni    string
		want   string
		byName bool
	}{
		{"a.example.com", "a.example.com", true},
		{"x.wild.test", "*.wild.test", true},
		{"y.x.wild.test", "a.example.com", false},
		{"", "a.example.com", false},
	} {
		c, byName := cs.lookup(tt.sni)
		if got := cn(c); got != tt.want || byName != tt.byName {
			t.Errorf("lookup(%q) = %s, %v; want %s, %v", tt.sni, got, byName, tt.want, tt.byName)
		}
	}
	for _, tt := range []struct {
		name    string
		data    map[string][]byte
		wantErr string
	}{
		{"missing cert", map[string][]byte{"a.key": aKey}, `http.tls[0]: the config Secret has no key "a.crt"`},
		{"missing key", map[string][]byte{"a.crt": aCert}, `http.tls[0]: the config Secret has no key "a.key"`},
		{"mismatched", map[string][]byte{"a.crt": aCert, "a.key": wKey}, `http.tls[0]: "a.crt" and "a.key"`},
		{"garbage", map[string][]byte{"a.crt": []byte("x"), "a.key": aKey}, `http.tls[0]`},
	} {
		if _, err := loadCerts(cfg[:1], tt.data); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: loadCerts = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestRedirectAnd404(t *testing.T) {
	h := newHTTPProxy(t.Logf, newMetrics(), nil)
	h.update(&proxyconfig.HTTP{RedirectHTTP: true}, nil)
	rec := httptest.NewRecorder()
	h.plainHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://web.tsymbiote.test:80/a/b?c=d", nil))
	if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != "https://web.tsymbiote.test/a/b?c=d" {
		t.Errorf("redirect = %d %q", rec.Code, rec.Header().Get("Location"))
	}
	rec = httptest.NewRecorder()
	h.tlsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "https://web.tsymbiote.test/a", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("no rule: %d, want 404", rec.Code)
	}
}

func TestHTTPProxyHeaders(t *testing.T) {
	var got http.Header
	var gotHost string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, gotHost = r.Header.Clone(), r.Host
		_, _ = io.WriteString(w, "backend "+r.URL.Path)
	}))
	defer backend.Close()
	m := newMetrics()
	h := newHTTPProxy(t.Logf, m, nil)
	h.update(&proxyconfig.HTTP{Routes: []proxyconfig.Route{{Path: "/", Backend: strings.TrimPrefix(backend.URL, "http://"), Service: "ns/web"}}}, nil)
	front := httptest.NewServer(h.plainHandler())
	defer front.Close()
	req, _ := http.NewRequest(http.MethodGet, front.URL+"/x", nil)
	req.Host = "web.tsymbiote.test"
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "backend /x" {
		t.Errorf("body %q", body)
	}
	if gotHost != "web.tsymbiote.test" || got.Get("X-Forwarded-For") != "127.0.0.1" || got.Get("X-Forwarded-Proto") != "http" || got.Get("X-Forwarded-Host") != "web.tsymbiote.test" {
		t.Errorf("backend saw Host %q, X-Forwarded-For %q, -Proto %q, -Host %q", gotHost, got.Get("X-Forwarded-For"), got.Get("X-Forwarded-Proto"), got.Get("X-Forwarded-Host"))
	}
}

// udpEcho answers every datagram with itself, on loopback.
func udpEcho(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo(buf[:n], a)
		}
	}()
	return c
}

// TestUDPSessions runs a udpForward over loopback sockets: each client gets
// its own upstream session, replies reach the right client, and sessions end
// after the idle time on an injected clock.
func TestUDPSessions(t *testing.T) {
	echo := udpEcho(t)
	front, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clock := tstest.NewClock(tstest.ClockOpts{})
	d := &net.Dialer{}
	u := newUDPForward(t.Logf, newMetrics(), clock, []net.PacketConn{front},
		proxyconfig.Forward{Service: "ns/echo", Protocol: "UDP", Port: 53, Target: echo.LocalAddr().String()}, d.DialContext)
	defer u.close()

	clients := make([]net.Conn, 2)
	for i := range clients {
		c, err := net.Dial("udp", front.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	roundTrip := func(c net.Conn, msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("echo of %q = %q, %v", msg, buf[:n], err)
		}
	}
	roundTrip(clients[0], "one")
	roundTrip(clients[1], "two")
	roundTrip(clients[0], "three")
	if n := u.numSessions(); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
	clock.Advance(udpIdle / 2)
	roundTrip(clients[1], "keepalive")
	clock.Advance(udpIdle/2 + time.Second)
	if n := u.reap(); n != 1 {
		t.Fatalf("after client 0 idled out: %d sessions, want 1", n)
	}
	clock.Advance(udpIdle + time.Second)
	if n := u.reap(); n != 0 {
		t.Fatalf("after both idled out: %d sessions, want 0", n)
	}
	roundTrip(clients[0], "again") // a new session
	if n := u.numSessions(); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
}

// TestTCPHalfClose checks that a client that closes its sending side still
// gets the whole answer.
func TestTCPHalfClose(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		c, err := backend.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c) // until the client's half-close
		_, _ = c.Write([]byte(strings.ToUpper(string(b))))
	}()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics()
	d := &net.Dialer{}
	f := newTCPForward(t.Logf, m, front, proxyconfig.Forward{Service: "ns/up", Protocol: "TCP", Port: 1, Target: backend.Addr().String()}, d.DialContext)
	defer f.close()
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "HELLO" {
		t.Fatalf("answer %q, %v", b, err)
	}
}

func TestSecretStore(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "state", Namespace: "ns"},
		Data: map[string][]byte{"_current-profile": []byte("p1")}})
	sec := KubeSecrets(cs.CoreV1().Secrets("ns"))
	st, err := newSecretStore(ctx, sec, "state")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := st.ReadState(ipn.CurrentProfileStateKey); err != nil || string(b) != "p1" {
		t.Fatalf("ReadState = %q, %v", b, err)
	}
	if _, err := st.ReadState("profile-x"); !errors.Is(err, ipn.ErrStateNotExist) {
		t.Fatalf("ReadState(missing) = %v", err)
	}
	if err := st.WriteState("profile/x", []byte("v")); err != nil {
		t.Fatal(err)
	}
	s, _ := sec.Get(ctx, "state")
	if string(s.Data["profile_x"]) != "v" {
		t.Fatalf("Secret data %v", s.Data)
	}
	if err := st.WriteState("profile/x", nil); err != nil {
		t.Fatal(err)
	}
	s, _ = sec.Get(ctx, "state")
	if _, ok := s.Data["profile_x"]; ok {
		t.Fatalf("deleted key still there: %v", s.Data)
	}
	// A store over a Secret that does not exist yet creates it.
	st2, err := newSecretStore(ctx, sec, "new")
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.WriteState("k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if s, err := sec.Get(ctx, "new"); err != nil || string(s.Data["k"]) != "1" {
		t.Fatalf("created Secret %v, %v", s, err)
	}
}

func TestTailnetCert(t *testing.T) {
	crt, key := testCert(t, "proxy.tailnet.ts.net")
	tailnet, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	ownCrt, ownKey := testCert(t, "app.example.com")
	h := newHTTPProxy(t.Logf, newMetrics(), nil)
	calls := 0
	var fail error
	h.tailnetCert = func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
		calls++
		if fail != nil {
			return nil, fail
		}
		return &tailnet, nil
	}
	h.certDomains = func() []string { return []string{"proxy.tailnet.ts.net"} }

	h.update(&proxyconfig.HTTP{TailnetCert: true}, nil)
	if !h.hasTLS() {
		t.Fatal("TailnetCert alone does not open 443")
	}
	if c, err := h.getCertificate(&tls.ClientHelloInfo{ServerName: "proxy.tailnet.ts.net"}); err != nil || c != &tailnet || calls != 1 {
		t.Fatalf("tailnet name: %v, %v, %d calls", c, err, calls)
	}
	if _, err := h.getCertificate(&tls.ClientHelloInfo{ServerName: "other.example.com"}); err == nil {
		t.Fatal("a name that is not the node's got a certificate")
	}
	// Headscale issues none: the handshake fails, naming the name.
	fail = errors.New("no certificates here")
	if _, err := h.getCertificate(&tls.ClientHelloInfo{ServerName: "proxy.tailnet.ts.net"}); err == nil || !strings.Contains(err.Error(), "proxy.tailnet.ts.net") {
		t.Fatalf("failing tailnet certificate: %v", err)
	}
	// With a certificate of its own as well, that one is the fallback.
	cs, err := loadCerts([]proxyconfig.TLS{{Hosts: []string{"app.example.com"}, CertKey: "c", KeyKey: "k"}}, map[string][]byte{"c": ownCrt, "k": ownKey})
	if err != nil {
		t.Fatal(err)
	}
	h.update(&proxyconfig.HTTP{TailnetCert: true}, cs)
	if c, err := h.getCertificate(&tls.ClientHelloInfo{ServerName: "proxy.tailnet.ts.net"}); err != nil || c == &tailnet {
		t.Fatalf("fallback: %v, %v", c, err)
	}
	h.update(&proxyconfig.HTTP{}, nil)
	if h.hasTLS() {
		t.Fatal("443 open without certificates")
	}
}
