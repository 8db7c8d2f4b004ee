// Package proxy is tsymbiote-proxy: a tsnet node that exposes Services (L4), Ingresses (L7) and subnets on the tailnet.
//
// It reads its proxyconfig.Config from a Secret it watches, applies changes
// without a restart, keeps its node state in a second Secret (so a
// rescheduled pod is the same node with the same address) and reports its
// FQDN, addresses and node ID as annotations on that Secret.
package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
	"tailscale.com/client/local"
	"tailscale.com/ipn"
	"tailscale.com/tsnet"
	"tailscale.com/tstime"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane/tsnode"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
)

// Options configure a Proxy.
type Options struct {
	Secrets      Secrets // the pod namespace's Secrets
	ConfigSecret string  // name of the config Secret
	StateSecret  string  // name of the state Secret
	// AuthKey joins the tailnet the first time; a secret, never logged.
	AuthKey    string
	ControlURL string // empty is Tailscale's
	// Dir is tsnet's working directory (its log config and certificate
	// cache); the node's identity is in StateSecret, not here.
	Dir string
	// MetricsAddr serves /metrics, /healthz and /readyz; "" turns it off.
	MetricsAddr string
	// TsnetLogf gets tsnet's verbose backend logs; discarded when nil.
	TsnetLogf logger.Logf
	// Dial reaches backends; a net.Dialer when nil.
	Dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	Clock tstime.Clock // tstime.StdClock when nil
}

// Proxy is one running proxy. Its methods are safe for concurrent use.
type Proxy struct {
	logf logger.Logf
	o    Options
	m    *metrics

	srv     *tsnet.Server
	lc      *local.Client
	http    *httpProxy
	subnets atomic.Pointer[[]netip.Prefix]

	running    atomic.Bool  // the backend is Running
	applied    atomic.Bool  // a config has been applied
	generation atomic.Int64 // of the config applied last

	statusMu sync.Mutex // serializes writeStatus

	// mu guards the listeners; only the Run goroutine changes them.
	mu       sync.Mutex
	cfg      *proxyconfig.Config
	tcp      map[uint16]*tcpForward
	udp      map[uint16]*udpForward
	plain    *server
	tls      *server
	lastRV   string // resourceVersion of the config Secret applied
	status   map[string]string
	errShown string // the config error last written, "" when none
}

// New returns a Proxy; Run starts it.
func New(logf logger.Logf, o Options) (*Proxy, error) {
	switch {
	case o.Secrets == nil:
		return nil, errors.New("proxy: no Secrets client")
	case o.ConfigSecret == "":
		return nil, fmt.Errorf("proxy: %s: empty config Secret name", proxyconfig.EnvConfigSecret)
	case o.StateSecret == "":
		return nil, fmt.Errorf("proxy: %s: empty state Secret name", proxyconfig.EnvStateSecret)
	case o.ConfigSecret == o.StateSecret:
		return nil, fmt.Errorf("proxy: %s and %s name the same Secret %q", proxyconfig.EnvConfigSecret, proxyconfig.EnvStateSecret, o.StateSecret)
	case o.Dir == "":
		return nil, errors.New("proxy: empty working directory")
	}
	if o.Dial == nil {
		d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
		o.Dial = d.DialContext
	}
	if o.Clock == nil {
		o.Clock = tstime.StdClock{}
	}
	if o.TsnetLogf == nil {
		o.TsnetLogf = logger.Discard
	}
	p := &Proxy{logf: logf, o: o, m: newMetrics(), tcp: map[uint16]*tcpForward{}, udp: map[uint16]*udpForward{}}
	p.subnets.Store(&[]netip.Prefix{})
	p.http = newHTTPProxy(logger.WithPrefix(logf, "http: "), p.m, o.Dial)
	return p, nil
}

// Ready reports whether the node is Running and a config has been applied.
func (p *Proxy) Ready() bool { return p.running.Load() && p.applied.Load() }

// Run runs the proxy until ctx ends, then stops it gracefully: listeners
// close, HTTP requests in flight get a few seconds, the node goes offline
// (it keeps its identity in the state Secret).
func (p *Proxy) Run(ctx context.Context) (err error) {
	var health *http.Server
	if p.o.MetricsAddr != "" {
		ln, err := net.Listen("tcp", p.o.MetricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-addr %s: %w", p.o.MetricsAddr, err)
		}
		health = &http.Server{Handler: p.healthHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = health.Serve(ln) }() // ErrServerClosed at Shutdown
		p.logf("serving /metrics, /healthz and /readyz on %v", ln.Addr())
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = health.Shutdown(sctx) // best effort at exit
		}()
	}
	store, err := newSecretStore(ctx, p.o.Secrets, p.o.StateSecret)
	if err != nil {
		return err
	}
	updates := make(chan *corev1.Secret, 1)
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		p.watchConfig(wctx, updates)
	}()
	defer func() {
		stopWatch()
		<-watchDone
	}()

	// The node's hostname and tags come from the config: wait for one.
	var first *corev1.Secret
	var cfg *proxyconfig.Config
	p.logf("waiting for the config Secret %s", p.o.ConfigSecret)
	for cfg == nil {
		select {
		case <-ctx.Done():
			return nil
		case first = <-updates:
			if cfg, err = parseSecret(first); err != nil {
				p.configError(ctx, first, err)
			}
		}
	}

	if err := p.startNode(ctx, store, cfg); err != nil {
		return err
	}
	defer p.stop()

	statusDone := make(chan struct{})
	sctx, stopStatus := context.WithCancel(ctx)
	go func() {
		defer close(statusDone)
		p.watchStatus(sctx)
	}()
	defer func() {
		stopStatus()
		<-statusDone
	}()

	p.applySecret(ctx, first, cfg)
	for {
		select {
		case <-ctx.Done():
			p.logf("stopping")
			return nil
		case s := <-updates:
			if ctx.Err() != nil {
				continue // the next turn stops
			}
			c, err := parseSecret(s)
			if err != nil {
				p.configError(ctx, s, err)
				continue
			}
			p.applySecret(ctx, s, c)
		}
	}
}

func parseSecret(s *corev1.Secret) (*proxyconfig.Config, error) {
	b, ok := s.Data[proxyconfig.ConfigKey]
	if !ok {
		return nil, fmt.Errorf("the config Secret %s has no key %s", s.Name, proxyconfig.ConfigKey)
	}
	return proxyconfig.Parse(b)
}

// startNode joins the tailnet as cfg.Hostname and waits until it is Running.
func (p *Proxy) startNode(ctx context.Context, store *secretStore, cfg *proxyconfig.Config) error {
	tsnode.NoLogUpload() // as every TSymbiote daemon on tsnet
	p.srv = &tsnet.Server{
		Dir:        p.o.Dir,
		Store:      store,
		Hostname:   cfg.Hostname,
		ControlURL: p.o.ControlURL,
		AuthKey:    p.o.AuthKey,
		// No AdvertiseTags: the node's tags come from the auth key the
		// operator mints with them. Headscale refuses a registration
		// whose requested tags are those of its tagged key ("requested
		// tags are invalid or not permitted").
		Logf:     p.o.TsnetLogf,
		UserLogf: logger.WithPrefix(p.logf, "tsnet: "),
	}
	if _, err := store.ReadState(ipn.CurrentProfileStateKey); err == nil {
		p.logf("joining the tailnet as %s with the node state in Secret %s", cfg.Hostname, p.o.StateSecret)
	} else {
		if p.o.AuthKey == "" {
			p.logf("no %s and no node state in Secret %s: waiting for an interactive login", proxyconfig.EnvAuthKey, p.o.StateSecret)
		}
		p.logf("joining the tailnet as new node %s (state goes to Secret %s)", cfg.Hostname, p.o.StateSecret)
	}
	if err := p.srv.Start(); err != nil {
		return fmt.Errorf("starting tsnet: %w", err)
	}
	if err := p.installSubnetHandlers(); err != nil {
		p.srv.Close()
		return err
	}
	lc, err := p.srv.LocalClient()
	if err != nil {
		p.srv.Close()
		return err
	}
	p.lc = lc
	p.http.tailnetCert = lc.GetCertificate
	p.http.certDomains = p.srv.CertDomains
	start := time.Now()
	st, err := p.srv.Up(ctx)
	if err != nil {
		p.srv.Close()
		if ctx.Err() != nil {
			return fmt.Errorf("stopped before joining the tailnet: %w", ctx.Err())
		}
		return fmt.Errorf("joining the tailnet: %w", err)
	}
	p.running.Store(true)
	p.logf("on the tailnet as %s %v (node %s) after %v", strings.TrimSuffix(st.Self.DNSName, "."), st.TailscaleIPs, st.Self.ID, time.Since(start).Round(time.Millisecond))
	return nil
}

// stop closes every listener and the node.
func (p *Proxy) stop() {
	p.mu.Lock()
	for port, f := range p.tcp {
		f.close()
		delete(p.tcp, port)
	}
	for port, f := range p.udp {
		f.close()
		delete(p.udp, port)
	}
	p.plain.shutdown()
	p.tls.shutdown()
	p.plain, p.tls = nil, nil
	p.mu.Unlock()
	p.running.Store(false)
	p.srv.Close()
	p.logf("stopped: the node is offline and keeps its state in Secret %s", p.o.StateSecret)
}

// watchConfig sends the config Secret to updates each time it changes,
// keeping only the newest when the receiver is busy. It re-lists after a
// watch ends or fails, with a backoff.
func (p *Proxy) watchConfig(ctx context.Context, updates chan *corev1.Secret) {
	send := func(s *corev1.Secret) {
		select {
		case <-updates:
		default:
		}
		updates <- s
	}
	backoff := time.Second
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, apiTimeout)
		s, err := p.o.Secrets.Get(gctx, p.o.ConfigSecret)
		cancel()
		rv := ""
		switch {
		case apierrors.IsNotFound(err):
			p.logf("config Secret %s does not exist (yet): waiting for it", p.o.ConfigSecret)
		case err != nil:
			p.logf("reading config Secret %s: %v", p.o.ConfigSecret, err)
			if !sleepCtx(ctx, p.o.Clock, backoff) {
				return
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		default:
			rv = s.ResourceVersion
			send(s)
		}
		w, err := p.o.Secrets.Watch(ctx, p.o.ConfigSecret, rv)
		if err != nil {
			p.logf("watching config Secret %s: %v", p.o.ConfigSecret, err)
			if !sleepCtx(ctx, p.o.Clock, backoff) {
				return
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
		p.drainWatch(ctx, w, send)
		w.Stop()
	}
}

func (p *Proxy) drainWatch(ctx context.Context, w watch.Interface, send func(*corev1.Secret)) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				return
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if s, ok := ev.Object.(*corev1.Secret); ok && s.Name == p.o.ConfigSecret {
					send(s)
				}
			case watch.Deleted:
				p.logf("%v: keeping the config applied last until it is recreated", errSecretGone)
			case watch.Error:
				p.logf("watch of config Secret %s ended: %v", p.o.ConfigSecret, apierrors.FromObject(ev.Object))
				return
			}
		}
	}
}

func sleepCtx(ctx context.Context, clock tstime.Clock, d time.Duration) bool {
	t, c := clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-c:
		return true
	}
}

// configError reports a config that cannot be applied: logged, counted and
// written on the state Secret, while the config applied last stays.
func (p *Proxy) configError(ctx context.Context, s *corev1.Secret, err error) {
	p.m.applyErrs.Inc()
	p.logf("config Secret %s (resourceVersion %s): not applied: %v", s.Name, s.ResourceVersion, err)
	p.mu.Lock()
	p.errShown = err.Error()
	p.mu.Unlock()
	p.writeStatus(ctx)
}

// applySecret applies a parsed config and the certificates beside it.
func (p *Proxy) applySecret(ctx context.Context, s *corev1.Secret, cfg *proxyconfig.Config) {
	p.mu.Lock()
	same := s.ResourceVersion != "" && s.ResourceVersion == p.lastRV
	p.mu.Unlock()
	if same {
		return
	}
	if err := p.apply(ctx, cfg, s.Data); err != nil {
		if ctx.Err() != nil {
			return // stopping: not the config's fault
		}
		p.configError(ctx, s, err)
		return
	}
	p.mu.Lock()
	p.lastRV = s.ResourceVersion
	p.errShown = ""
	p.mu.Unlock()
	p.generation.Store(cfg.Generation)
	p.m.generation.Set(float64(cfg.Generation))
	p.applied.Store(true)
	p.writeStatus(ctx)
}

// apply makes the node serve cfg. Certificates are checked first, so that a
// broken Secret changes nothing; a listener that cannot be opened is an
// error after the others are applied.
func (p *Proxy) apply(ctx context.Context, cfg *proxyconfig.Config, data map[string][]byte) error {
	var certs *certSet
	if cfg.HTTP != nil && len(cfg.HTTP.TLS) > 0 {
		var err error
		if certs, err = loadCerts(cfg.HTTP.TLS, data); err != nil {
			return err
		}
	}
	if err := p.applyPrefs(ctx, cfg); err != nil {
		return err
	}
	p.subnets.Store(new(slices.Clone(cfg.AdvertiseRoutes)))

	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	errs = append(errs, p.applyForwards(cfg.Forwards)...)
	if cfg.HTTP != nil {
		p.http.update(cfg.HTTP, certs)
		if p.plain == nil {
			srv, err := p.serve(":80", false)
			if err != nil {
				errs = append(errs, fmt.Errorf("http: port 80: %w", err))
			}
			p.plain = srv
		}
		switch {
		case p.http.hasTLS() && p.tls == nil:
			srv, err := p.serve(":443", true)
			if err != nil {
				errs = append(errs, fmt.Errorf("http: port 443: %w", err))
			}
			p.tls = srv
		case !p.http.hasTLS() && p.tls != nil:
			p.tls.shutdown()
			p.tls = nil
			p.logf("http: port 443 closed: no certificate configured")
		}
	} else if p.plain != nil || p.tls != nil {
		p.plain.shutdown()
		p.tls.shutdown()
		p.plain, p.tls = nil, nil
		p.logf("http: ports 80 and 443 closed: no HTTP in the config")
	}
	p.cfg = cfg
	return errors.Join(errs...)
}

// renameSettle bounds how long applyPrefs waits for the control plane to
// hand the node its new name before it changes the routes too.
const renameSettle = 10 * time.Second

// applyPrefs edits the node's hostname and advertised routes when they
// differ from cfg's, and says when its tags differ.
//
// A rename is sent on its own and the routes only once the new name is back
// in the node's own map: Headscale answers a Hostinfo change that also moves
// a primary route with a policy-only update that leaves out the node itself,
// so a rename sent together with routes reached the node (and its status
// Secret) only at the next full map, minutes later.
func (p *Proxy) applyPrefs(ctx context.Context, cfg *proxyconfig.Config) error {
	cur, err := p.lc.GetPrefs(ctx)
	if err != nil {
		return fmt.Errorf("reading the node's prefs: %w", err)
	}
	if st, err := p.lc.StatusWithoutPeers(ctx); err == nil && st.Self != nil {
		var have []string
		if st.Self.Tags != nil {
			have = st.Self.Tags.AsSlice()
		}
		if !slices.Equal(sortedStrings(have), sortedStrings(cfg.Tags)) {
			// Tags are the control plane's to set (from the auth key, or
			// by the operator through its API), not the node's.
			p.logf("node tags %v differ from the config's %v: the control plane sets them", have, cfg.Tags)
		}
	}
	routesChange := !slices.Equal(sortedPrefixes(cur.AdvertiseRoutes), sortedPrefixes(cfg.AdvertiseRoutes))
	if cur.Hostname != cfg.Hostname {
		oldName := p.selfName(ctx)
		mp := &ipn.MaskedPrefs{HostnameSet: true, Prefs: ipn.Prefs{Hostname: cfg.Hostname}}
		if _, err := p.lc.EditPrefs(ctx, mp); err != nil {
			return fmt.Errorf("setting hostname %s: %w", cfg.Hostname, err)
		}
		p.logf("node prefs: hostname %s", cfg.Hostname)
		if routesChange {
			p.waitRenamed(ctx, oldName)
		}
	}
	if !routesChange {
		return nil
	}
	routes := slices.Clone(cfg.AdvertiseRoutes)
	if routes == nil {
		routes = []netip.Prefix{}
	}
	mp := &ipn.MaskedPrefs{AdvertiseRoutesSet: true, Prefs: ipn.Prefs{AdvertiseRoutes: routes}}
	if _, err := p.lc.EditPrefs(ctx, mp); err != nil {
		return fmt.Errorf("setting routes %v: %w", cfg.AdvertiseRoutes, err)
	}
	p.logf("node prefs: routes %v", cfg.AdvertiseRoutes)
	return nil
}

// selfName is the node's MagicDNS name as the control plane last sent it.
func (p *Proxy) selfName(ctx context.Context) string {
	st, err := p.lc.StatusWithoutPeers(ctx)
	if err != nil || st.Self == nil {
		return ""
	}
	return st.Self.DNSName
}

// waitRenamed waits until the node's name differs from old, for at most
// renameSettle; a node that is not connected just goes on.
func (p *Proxy) waitRenamed(ctx context.Context, old string) {
	if old == "" {
		return
	}
	deadline := p.o.Clock.Now().Add(renameSettle)
	for p.selfName(ctx) == old {
		if ctx.Err() != nil || p.o.Clock.Now().After(deadline) {
			p.logf("node still named %s %v after the rename; changing routes anyway", old, renameSettle)
			return
		}
		sleepCtx(ctx, p.o.Clock, 100*time.Millisecond)
	}
}

func sortedStrings(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func sortedPrefixes(s []netip.Prefix) []netip.Prefix {
	s = slices.Clone(s)
	slices.SortFunc(s, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return s
}

// applyForwards opens, retargets and closes L4 listeners to match fs.
// p.mu is held.
func (p *Proxy) applyForwards(fs []proxyconfig.Forward) []error {
	var errs []error
	wantTCP, wantUDP := map[uint16]proxyconfig.Forward{}, map[uint16]proxyconfig.Forward{}
	for _, f := range fs {
		if f.Protocol == proxyconfig.ProtocolUDP {
			wantUDP[f.Port] = f
		} else {
			wantTCP[f.Port] = f
		}
	}
	for port, t := range p.tcp {
		if _, ok := wantTCP[port]; !ok {
			t.close()
			delete(p.tcp, port)
			p.logf("tcp port %d closed", port)
		}
	}
	for port, u := range p.udp {
		if _, ok := wantUDP[port]; !ok {
			u.close()
			delete(p.udp, port)
			p.logf("udp port %d closed", port)
		}
	}
	for port, f := range wantTCP {
		if t, ok := p.tcp[port]; ok {
			if old := t.fwd.Load(); *old != f {
				t.fwd.Store(&f)
				p.logf("tcp port %d now forwards to %s (%s)", port, f.Target, f.Service)
			}
			continue
		}
		ln, err := p.srv.Listen("tcp", ":"+strconv.Itoa(int(port)))
		if err != nil {
			errs = append(errs, fmt.Errorf("forwards: tcp port %d: %w", port, err))
			continue
		}
		p.tcp[port] = newTCPForward(p.logf, p.m, ln, f, p.o.Dial)
		p.logf("tcp port %d forwards to %s (%s)", port, f.Target, f.Service)
	}
	for port, f := range wantUDP {
		if u, ok := p.udp[port]; ok {
			if old := u.fwd.Load(); *old != f {
				u.fwd.Store(&f)
				p.logf("udp port %d now forwards to %s (%s)", port, f.Target, f.Service)
			}
			continue
		}
		ip4, ip6 := p.srv.TailscaleIPs()
		var pcs []net.PacketConn
		var err error
		for _, ip := range []netip.Addr{ip4, ip6} {
			if !ip.IsValid() {
				continue
			}
			pc, lerr := p.srv.ListenPacket("udp", netip.AddrPortFrom(ip, port).String())
			if lerr != nil {
				err = lerr
				break
			}
			pcs = append(pcs, pc)
		}
		if err != nil || len(pcs) == 0 {
			for _, pc := range pcs {
				pc.Close()
			}
			errs = append(errs, fmt.Errorf("forwards: udp port %d: %w", port, cmp.Or(err, errors.New("the node has no address"))))
			continue
		}
		p.udp[port] = newUDPForward(p.logf, p.m, p.o.Clock, pcs, f, p.o.Dial)
		p.logf("udp port %d forwards to %s (%s)", port, f.Target, f.Service)
	}
	return errs
}

// server is one HTTP(S) listener of the node.
type server struct {
	ln  net.Listener
	srv *http.Server
}

func (s *server) shutdown() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close() // requests that outlived the grace period
	}
}

// serve listens on addr of the node and serves the HTTP proxy there.
func (p *Proxy) serve(addr string, useTLS bool) (*server, error) {
	ln, err := p.srv.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	h := p.http.plainHandler()
	if useTLS {
		h = p.http.tlsHandler()
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	sl := ln
	if useTLS {
		sl = tlsListener(ln, p.http.getCertificate)
	}
	go func() {
		if err := hs.Serve(sl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.logf("http %s: %v", addr, err)
		}
	}()
	p.logf("http: serving %s", bool2(useTLS, "https on port 443", "http on port 80"))
	return &server{ln: ln, srv: hs}, nil
}

func bool2(b bool, t, f string) string {
	if b {
		return t
	}
	return f
}
