package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"tailscale.com/ipn"
	"tailscale.com/types/nettype"
	"tailscale.com/wgengine/netstack"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
)

// statusRefresh is how often the status is re-read besides the IPN bus's
// news: a rename or new address can reach the node in a netmap delta that
// the bus does not announce as a self change.
const statusRefresh = 5 * time.Second

// watchStatus follows the node's state: readiness, and the FQDN, addresses
// and node ID on the state Secret whenever they change.
func (p *Proxy) watchStatus(ctx context.Context) {
	tickDone := make(chan struct{})
	defer func() { <-tickDone }()
	go func() {
		defer close(tickDone)
		t, c := p.o.Clock.NewTicker(statusRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-c:
				p.writeStatus(ctx)
			}
		}
	}()
	for ctx.Err() == nil {
		w, err := p.lc.WatchIPNBus(ctx, ipn.NotifyInitialState)
		if err != nil {
			if ctx.Err() == nil {
				p.logf("watching the node's state: %v", err)
				sleepCtx(ctx, p.o.Clock, time.Second)
			}
			continue
		}
		for {
			n, err := w.Next()
			if err != nil {
				break
			}
			if n.State != nil {
				running := *n.State == ipn.Running
				if p.running.Swap(running) != running {
					p.logf("node state %v", *n.State)
				}
			}
			if n.State != nil || n.SelfChange != nil {
				p.writeStatus(ctx)
			}
		}
		w.Close()
	}
}

// statusAnnotations are what the proxy reports on its state Secret.
func (p *Proxy) statusAnnotations(ctx context.Context) (map[string]string, error) {
	st, err := p.lc.StatusWithoutPeers(ctx)
	if err != nil {
		return nil, err
	}
	a := map[string]string{}
	if st.Self != nil {
		a[proxyconfig.AnnotationFQDN] = strings.TrimSuffix(st.Self.DNSName, ".")
		a[proxyconfig.AnnotationDeviceID] = string(st.Self.ID)
	}
	var ips []string
	for _, ip := range st.TailscaleIPs {
		if ip.Is4() {
			ips = append([]string{ip.String()}, ips...)
		} else {
			ips = append(ips, ip.String())
		}
	}
	a[proxyconfig.AnnotationIPs] = strings.Join(ips, ",")
	if p.applied.Load() {
		a[proxyconfig.AnnotationConfigGeneration] = strconv.FormatInt(p.generation.Load(), 10)
	}
	for k, v := range a {
		if v == "" {
			delete(a, k)
		}
	}
	return a, nil
}

// writeStatus writes the status annotations (and the config error, if any)
// on the state Secret when they changed since the last write. Calls are
// serialized, so that an older view never overwrites a newer one.
func (p *Proxy) writeStatus(ctx context.Context) {
	p.statusMu.Lock()
	defer p.statusMu.Unlock()
	a := map[string]string{}
	if p.lc != nil {
		var err error
		if a, err = p.statusAnnotations(ctx); err != nil {
			if ctx.Err() == nil {
				p.logf("reading the node's status: %v", err)
			}
			return
		}
	}
	p.mu.Lock()
	if e := p.errShown; e != "" {
		a[proxyconfig.AnnotationConfigError] = e
	}
	same := maps.Equal(a, p.status)
	p.mu.Unlock()
	if same {
		return
	}
	ours := []string{proxyconfig.AnnotationFQDN, proxyconfig.AnnotationIPs, proxyconfig.AnnotationDeviceID,
		proxyconfig.AnnotationConfigGeneration, proxyconfig.AnnotationConfigError}
	err := modifySecret(ctx, p.o.Secrets, p.o.StateSecret, func(s *corev1.Secret) bool {
		changed := false
		for _, k := range ours {
			v, want := a[k]
			old, has := s.Annotations[k]
			switch {
			case want && (!has || old != v):
				if s.Annotations == nil {
					s.Annotations = map[string]string{}
				}
				s.Annotations[k] = v
				changed = true
			case !want && has:
				delete(s.Annotations, k)
				changed = true
			}
		}
		return changed
	})
	if err != nil {
		if ctx.Err() == nil {
			p.logf("writing status to Secret %s: %v", p.o.StateSecret, err)
		}
		return
	}
	p.mu.Lock()
	p.status = a
	p.mu.Unlock()
	p.logf("status on Secret %s: fqdn=%s ips=%s node=%s generation=%s", p.o.StateSecret,
		a[proxyconfig.AnnotationFQDN], a[proxyconfig.AnnotationIPs], a[proxyconfig.AnnotationDeviceID], a[proxyconfig.AnnotationConfigGeneration])
}

// healthHandler serves /metrics, /healthz (the process answers) and
// /readyz (the node is Running and a config is applied).
func (p *Proxy) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", p.m.handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case !p.running.Load():
			http.Error(w, "the node is not running on the tailnet", http.StatusServiceUnavailable)
		case !p.applied.Load():
			http.Error(w, "no config applied", http.StatusServiceUnavailable)
		default:
			fmt.Fprintf(w, "ok: config generation %d\n", p.generation.Load())
		}
	})
	return mux
}

func tlsListener(ln net.Listener, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) net.Listener {
	return tls.NewListener(ln, &tls.Config{
		GetCertificate: getCert,
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	})
}

// inSubnets reports whether ip is in a route the config advertises.
func (p *Proxy) inSubnets(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, pfx := range *p.subnets.Load() {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// installSubnetHandlers makes the node forward tailnet traffic addressed to
// its advertised routes. tsnet turns on netstack's ProcessSubnets, but its
// flow hooks drop every flow that no tsnet listener claims, subnet ones
// included (tailscale.com v1.102: getTCPHandlerForFlow and
// getUDPHandlerForFlow answer "intercept, no handler"). TCP goes through
// tsnet's fallback handler: dial the destination from the pod and copy. UDP
// has no such hook, so the netstack's UDP hook is wrapped to let flows to the
// routes through to netstack's own forwarder (as tailscaled's userspace mode
// does). The hook is replaced right after Start, before the node has any
// peer that could send it a packet.
func (p *Proxy) installSubnetHandlers() error {
	p.srv.RegisterFallbackTCPHandler(func(src, dst netip.AddrPort) (func(net.Conn), bool) {
		if !p.inSubnets(dst.Addr()) {
			return nil, false
		}
		return func(c net.Conn) { p.forwardSubnetTCP(c, src, dst) }, true
	})
	ns, ok := p.srv.Sys().Netstack.Get().(*netstack.Impl)
	if !ok {
		return errors.New("tsnet has no netstack: cannot route subnet UDP")
	}
	orig := ns.GetUDPHandlerForFlow
	ns.GetUDPHandlerForFlow = func(src, dst netip.AddrPort) (func(nettype.ConnPacketConn), bool) {
		if p.inSubnets(dst.Addr()) {
			p.m.conns.WithLabelValues("subnet", "udp").Inc()
			return nil, false // netstack forwards it
		}
		return orig(src, dst)
	}
	return nil
}

func (p *Proxy) forwardSubnetTCP(c net.Conn, src, dst netip.AddrPort) {
	defer c.Close()
	p.m.conns.WithLabelValues("subnet", "tcp").Inc()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	up, err := p.o.Dial(ctx, "tcp", dst.String())
	cancel()
	if err != nil {
		p.m.errors.WithLabelValues("subnet", "tcp", "dial").Inc()
		p.logf("subnet: %v to %v: %v", src, dst, err)
		return
	}
	defer up.Close()
	in, out := splice(c, up)
	p.m.bytesIn.WithLabelValues("subnet", "tcp").Add(float64(in))
	p.m.bytesOut.WithLabelValues("subnet", "tcp").Add(float64(out))
}
