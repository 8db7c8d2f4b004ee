package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
)

// route is one compiled Ingress path.
type route struct {
	host    string // "" any, "*.x" one label under x, else exact
	path    string // cleaned: no trailing slash except "/"
	exact   bool
	service string
	backend string
	proxy   *httputil.ReverseProxy
}

// routeTable picks the route for a request with Ingress semantics: the most
// specific host that has rules (exact, then wildcard, then any), and within
// it an Exact path before the longest matching Prefix (ImplementationSpecific
// is Prefix). Immutable once built; swapped whole on a config change.
type routeTable struct {
	exact    map[string][]*route
	wildcard map[string][]*route // keyed by the suffix after "*."
	any      []*route
}

func newRouteTable(rs []proxyconfig.Route, newProxy func(backend string) *httputil.ReverseProxy) *routeTable {
	t := &routeTable{exact: map[string][]*route{}, wildcard: map[string][]*route{}}
	proxies := map[string]*httputil.ReverseProxy{}
	for _, r := range rs {
		p := r.Path
		if p == "" {
			p = "/"
		}
		if len(p) > 1 {
			p = strings.TrimRight(p, "/")
			if p == "" {
				p = "/"
			}
		}
		rp := proxies[r.Backend]
		if rp == nil && newProxy != nil {
			rp = newProxy(r.Backend)
			proxies[r.Backend] = rp
		}
		cr := &route{host: r.Host, path: p, exact: r.PathType == proxyconfig.PathTypeExact,
			service: r.Service, backend: r.Backend, proxy: rp}
		switch {
		case r.Host == "":
			t.any = append(t.any, cr)
		case strings.HasPrefix(r.Host, "*."):
			k := r.Host[2:]
			t.wildcard[k] = append(t.wildcard[k], cr)
		default:
			t.exact[r.Host] = append(t.exact[r.Host], cr)
		}
	}
	sortRoutes := func(rs []*route) {
		// Exact first, then longer prefixes first; stable keeps the
		// config's order among equals (the first rule wins).
		sort.SliceStable(rs, func(i, j int) bool {
			if rs[i].exact != rs[j].exact {
				return rs[i].exact
			}
			return len(rs[i].path) > len(rs[j].path)
		})
	}
	for _, rs := range t.exact {
		sortRoutes(rs)
	}
	for _, rs := range t.wildcard {
		sortRoutes(rs)
	}
	sortRoutes(t.any)
	return t
}

// match returns the route for host (without port) and path, or nil.
func (t *routeTable) match(host, path string) *route {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if path == "" {
		path = "/"
	}
	rs, ok := t.exact[host]
	if !ok {
		if _, parent, found := strings.Cut(host, "."); found {
			rs, ok = t.wildcard[parent]
		}
	}
	if !ok {
		rs = t.any
	}
	for _, r := range rs {
		if r.matches(path) {
			return r
		}
	}
	return nil
}

func (r *route) matches(path string) bool {
	if r.exact {
		return path == r.path
	}
	if r.path == "/" {
		return true
	}
	// Prefix matches whole path elements: /foo matches /foo and /foo/bar,
	// not /foobar.
	return path == r.path || strings.HasPrefix(path, r.path) && (path[len(r.path)] == '/')
}

// certSet is the certificates of the HTTPS listener by SNI name. Immutable
// once built; swapped whole when the Secret changes, so a rotated
// certificate is served to the next handshake without a restart.
type certSet struct {
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate
	def      *tls.Certificate // the first entry without hosts, else the first entry
}

// loadCerts parses the PEM pairs the config names from the Secret's data.
func loadCerts(tlsCfg []proxyconfig.TLS, data map[string][]byte) (*certSet, error) {
	cs := &certSet{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	var first *tls.Certificate
	for i, t := range tlsCfg {
		certPEM, ok := data[t.CertKey]
		if !ok {
			return nil, fmt.Errorf("http.tls[%d]: the config Secret has no key %q", i, t.CertKey)
		}
		keyPEM, ok := data[t.KeyKey]
		if !ok {
			return nil, fmt.Errorf("http.tls[%d]: the config Secret has no key %q", i, t.KeyKey)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("http.tls[%d]: %q and %q: %w", i, t.CertKey, t.KeyKey, err)
		}
		if first == nil {
			first = &c
		}
		if len(t.Hosts) == 0 && cs.def == nil {
			cs.def = &c
		}
		for _, h := range t.Hosts {
			if w, ok := strings.CutPrefix(h, "*."); ok {
				if _, dup := cs.wildcard[w]; !dup {
					cs.wildcard[w] = &c
				}
			} else if _, dup := cs.exact[h]; !dup {
				cs.exact[h] = &c
			}
		}
	}
	if cs.def == nil {
		cs.def = first
	}
	return cs, nil
}

// lookup returns the certificate for an SNI name, and whether it matched
// by name (rather than being the default).
func (cs *certSet) lookup(sni string) (*tls.Certificate, bool) {
	sni = strings.ToLower(strings.TrimSuffix(sni, "."))
	if c, ok := cs.exact[sni]; ok {
		return c, true
	}
	if _, parent, ok := strings.Cut(sni, "."); ok {
		if c, ok := cs.wildcard[parent]; ok {
			return c, true
		}
	}
	return cs.def, false
}

// httpProxy is the L7 half of a proxy: the handlers of ports 80 and 443 and
// the TLS config of 443. Its state is swapped atomically by apply, so
// handlers and handshakes running concurrently see one config or the next.
type httpProxy struct {
	logf      logger.Logf
	m         *metrics
	transport http.RoundTripper
	table     atomic.Pointer[routeTable]
	certs     atomic.Pointer[certSet] // nil when the config has no TLS entries
	redirect  atomic.Bool
	tailnet   atomic.Bool // serve the tailnet's certificate for the node's names
	// tailnetCert fetches the tailnet certificate (LocalClient.GetCertificate);
	// certDomains lists the names it can be asked for. Both may be nil.
	tailnetCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	certDomains func() []string
}

func newHTTPProxy(logf logger.Logf, m *metrics, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *httpProxy {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // backends are cluster addresses: never through an HTTP proxy
	if dial != nil {
		tr.DialContext = dial
	}
	h := &httpProxy{logf: logf, m: m, transport: tr}
	h.table.Store(newRouteTable(nil, nil))
	return h
}

// update swaps in a new config. certs is nil when there are no TLS entries.
func (h *httpProxy) update(c *proxyconfig.HTTP, certs *certSet) {
	h.table.Store(newRouteTable(c.Routes, h.newReverseProxy))
	h.certs.Store(certs)
	h.redirect.Store(c.RedirectHTTP)
	h.tailnet.Store(c.TailnetCert)
}

func (h *httpProxy) newReverseProxy(backend string) *httputil.ReverseProxy {
	target := &url.URL{Scheme: "http", Host: backend}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			// Keep the client's Host: backends (and virtual hosts
			// behind them) see the name that was asked for.
			pr.Out.Host = pr.In.Host
		},
		Transport: h.transport,
		ErrorLog:  nil,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			svc, _ := r.Context().Value(serviceKey{}).(string)
			h.m.errors.WithLabelValues(svc, "http", "proxy").Inc()
			h.logf("http %s: %s %s to %s: %v", svc, r.Method, r.URL.Path, backend, err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
}

type serviceKey struct{}

// hasTLS reports whether port 443 has something to serve.
func (h *httpProxy) hasTLS() bool {
	return h.certs.Load() != nil || h.tailnet.Load() && h.tailnetCert != nil
}

// getCertificate is the HTTPS listener's tls.Config.GetCertificate: the
// config's certificate for the SNI name, else the tailnet's for the node's
// own name when TailnetCert is set, else the default certificate.
func (h *httpProxy) getCertificate(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cs := h.certs.Load()
	var def *tls.Certificate
	if cs != nil {
		c, byName := cs.lookup(hi.ServerName)
		if byName {
			return c, nil
		}
		def = c
	}
	if h.tailnet.Load() && h.tailnetCert != nil && (hi.ServerName == "" || h.isCertDomain(hi.ServerName)) {
		c, err := h.tailnetCert(hi)
		if err == nil {
			return c, nil
		}
		h.m.errors.WithLabelValues("", "https", "tailnet-cert").Inc()
		if def == nil {
			return nil, fmt.Errorf("getting the tailnet certificate for %q: %w", hi.ServerName, err)
		}
		h.logf("https: tailnet certificate for %q: %v; serving the default certificate", hi.ServerName, err)
	}
	if def == nil {
		return nil, fmt.Errorf("no certificate for %q", hi.ServerName)
	}
	return def, nil
}

func (h *httpProxy) isCertDomain(name string) bool {
	if h.certDomains == nil {
		return false
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, d := range h.certDomains() {
		if d == name {
			return true
		}
	}
	return false
}

// plainHandler serves port 80: routes, or a 308 to https when redirecting.
func (h *httpProxy) plainHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.redirect.Load() {
			host := r.Host
			if hh, _, err := net.SplitHostPort(host); err == nil {
				host = hh
			}
			h.m.requests.WithLabelValues("", "308").Inc()
			http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
			return
		}
		h.route(w, r)
	})
}

// tlsHandler serves port 443.
func (h *httpProxy) tlsHandler() http.Handler {
	return http.HandlerFunc(h.route)
}

func (h *httpProxy) route(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		host = hh
	}
	rt := h.table.Load().match(host, r.URL.Path)
	if rt == nil || rt.proxy == nil {
		h.m.requests.WithLabelValues("", "404").Inc()
		http.Error(w, "no rule for "+host+r.URL.Path, http.StatusNotFound)
		return
	}
	svc := rt.service
	h.m.conns.WithLabelValues(svc, "http").Inc()
	var in int64
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{ReadCloser: r.Body, n: &in}
	}
	cw := &countingWriter{ResponseWriter: w, code: http.StatusOK}
	rt.proxy.ServeHTTP(cw, r.WithContext(context.WithValue(r.Context(), serviceKey{}, svc)))
	h.m.bytesIn.WithLabelValues(svc, "http").Add(float64(in))
	h.m.bytesOut.WithLabelValues(svc, "http").Add(float64(cw.n))
	h.m.requests.WithLabelValues(svc, fmt.Sprint(cw.code)).Inc()
}

type countingBody struct {
	io.ReadCloser
	n *int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	*b.n += int64(n)
	return n, err
}

// countingWriter counts the body bytes written and keeps the status code.
type countingWriter struct {
	http.ResponseWriter
	code        int
	n           int64
	wroteHeader bool
}

func (w *countingWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController (flushes of streamed responses) reach
// the real writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush forwards flushes: ReverseProxy flushes streamed responses through it.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
