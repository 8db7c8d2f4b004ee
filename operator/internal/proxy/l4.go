package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"tailscale.com/tstime"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
)

// dialTimeout bounds a dial to a backend.
const dialTimeout = 10 * time.Second

// tcpForward accepts tailnet connections on one port and copies them to the
// current target. The target can change under it (a Service's ClusterIP is
// stable, but the config may name another): each new connection dials the
// target current then.
type tcpForward struct {
	logf    logger.Logf
	m       *metrics
	ln      net.Listener
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	fwd     atomic.Pointer[proxyconfig.Forward]
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{} // open tailnet side conns, closed by close
	closed  bool
	closeCh chan struct{}
}

func newTCPForward(logf logger.Logf, m *metrics, ln net.Listener, f proxyconfig.Forward, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *tcpForward {
	t := &tcpForward{logf: logf, m: m, ln: ln, dial: dial, conns: map[net.Conn]struct{}{}, closeCh: make(chan struct{})}
	t.fwd.Store(&f)
	t.wg.Add(1)
	go t.serve()
	return t
}

func (t *tcpForward) serve() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			select {
			case <-t.closeCh:
			default:
				f := t.fwd.Load()
				t.logf("tcp %s port %d: accept: %v", f.Service, f.Port, err)
			}
			return
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			c.Close()
			return
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			t.handle(c)
			t.mu.Lock()
			delete(t.conns, c)
			t.mu.Unlock()
		}()
	}
}

func (t *tcpForward) handle(c net.Conn) {
	defer c.Close()
	f := t.fwd.Load()
	labels := serviceLabels{service: f.Service, proto: "tcp"}
	t.m.conns.WithLabelValues(labels.service, labels.proto).Inc()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	up, err := t.dial(ctx, "tcp", f.Target)
	cancel()
	if err != nil {
		t.m.errors.WithLabelValues(labels.service, labels.proto, "dial").Inc()
		t.logf("tcp %s port %d: dialing %s for %v: %v", f.Service, f.Port, f.Target, c.RemoteAddr(), err)
		return
	}
	defer up.Close()
	in, out := splice(c, up)
	t.m.bytesIn.WithLabelValues(labels.service, labels.proto).Add(float64(in))
	t.m.bytesOut.WithLabelValues(labels.service, labels.proto).Add(float64(out))
}

// close stops accepting and closes open connections.
func (t *tcpForward) close() {
	t.mu.Lock()
	t.closed = true
	close(t.closeCh)
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.ln.Close()
	t.wg.Wait()
}

type serviceLabels struct{ service, proto string }

// closeWriter is a connection that can half-close (TCP, TLS, gonet's TCP).
type closeWriter interface{ CloseWrite() error }

// splice copies a to b and b to a until both directions end, passing each
// EOF on as a half-close so that protocols that shut down their sending side
// first still get their answer. It returns the bytes read from a (in) and
// from b (out).
func splice(a, b net.Conn) (in, out int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		out = copyHalf(a, b)
	}()
	in = copyHalf(b, a)
	wg.Wait()
	return in, out
}

// copyHalf copies src to dst, then half-closes dst (or closes both when dst
// cannot half-close or the copy failed).
func copyHalf(dst, src net.Conn) int64 {
	n, err := io.Copy(dst, src)
	if cw, ok := dst.(closeWriter); ok && err == nil {
		_ = cw.CloseWrite() // the peer may be gone; the other direction ends too
		return n
	}
	dst.Close()
	src.Close()
	return n
}

// udpIdle is how long a UDP session lives without a packet either way.
const udpIdle = 2 * time.Minute

// udpForward relays datagrams between tailnet clients and a target: one
// upstream socket per client address, so that replies go back to the client
// that asked, each closed after udpIdle without traffic.
type udpForward struct {
	logf  logger.Logf
	m     *metrics
	clock tstime.Clock
	pcs   []net.PacketConn // tailnet side, one per node address
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	idle  time.Duration
	fwd   atomic.Pointer[proxyconfig.Forward]

	mu       sync.Mutex
	sessions map[sessionKey]*udpSession
	closed   bool
	wg       sync.WaitGroup
	stopCh   chan struct{}
}

type sessionKey struct {
	pc     int // index into pcs
	client netip.AddrPort
}

type udpSession struct {
	up       net.Conn
	lastSeen atomic.Int64 // tstime.Clock unix nanos
}

func newUDPForward(logf logger.Logf, m *metrics, clock tstime.Clock, pcs []net.PacketConn, f proxyconfig.Forward, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *udpForward {
	u := &udpForward{logf: logf, m: m, clock: clock, pcs: pcs, dial: dial, idle: udpIdle,
		sessions: map[sessionKey]*udpSession{}, stopCh: make(chan struct{})}
	u.fwd.Store(&f)
	for i := range pcs {
		u.wg.Add(1)
		go u.serve(i)
	}
	u.wg.Add(1)
	go u.reapLoop()
	return u
}

func (u *udpForward) serve(i int) {
	defer u.wg.Done()
	buf := make([]byte, 65535)
	pc := u.pcs[i]
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			select {
			case <-u.stopCh:
			default:
				if !errors.Is(err, net.ErrClosed) {
					f := u.fwd.Load()
					u.logf("udp %s port %d: read: %v", f.Service, f.Port, err)
				}
			}
			return
		}
		client, ok := addrPortOf(addr)
		if !ok {
			continue
		}
		s, err := u.session(i, client)
		if err != nil {
			f := u.fwd.Load()
			u.m.errors.WithLabelValues(f.Service, "udp", "dial").Inc()
			u.logf("udp %s port %d: dialing %s for %v: %v", f.Service, f.Port, f.Target, client, err)
			continue
		}
		s.lastSeen.Store(u.clock.Now().UnixNano())
		f := u.fwd.Load()
		if _, err := s.up.Write(buf[:n]); err != nil {
			u.m.errors.WithLabelValues(f.Service, "udp", "write").Inc()
			continue
		}
		u.m.bytesIn.WithLabelValues(f.Service, "udp").Add(float64(n))
	}
}

// session returns the client's session, dialing its upstream socket and
// starting its reply loop when it is new.
func (u *udpForward) session(i int, client netip.AddrPort) (*udpSession, error) {
	k := sessionKey{i, client}
	u.mu.Lock()
	s := u.sessions[k]
	closed := u.closed
	u.mu.Unlock()
	if s != nil {
		return s, nil
	}
	if closed {
		return nil, net.ErrClosed
	}
	f := u.fwd.Load()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	up, err := u.dial(ctx, "udp", f.Target)
	if err != nil {
		return nil, err
	}
	s = &udpSession{up: up}
	s.lastSeen.Store(u.clock.Now().UnixNano())
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		up.Close()
		return nil, net.ErrClosed
	}
	u.sessions[k] = s
	u.wg.Add(1)
	u.mu.Unlock()
	u.m.conns.WithLabelValues(f.Service, "udp").Inc()
	go u.replies(i, client, s)
	return s, nil
}

func (u *udpForward) replies(i int, client netip.AddrPort, s *udpSession) {
	defer u.wg.Done()
	buf := make([]byte, 65535)
	dst := net.UDPAddrFromAddrPort(client)
	for {
		n, err := s.up.Read(buf)
		if err != nil {
			// Closed by the reaper or close; a refused port (ICMP) also
			// ends up here and the next packet from the client redials.
			u.drop(sessionKey{i, client}, s)
			return
		}
		s.lastSeen.Store(u.clock.Now().UnixNano())
		f := u.fwd.Load()
		if _, err := u.pcs[i].WriteTo(buf[:n], dst); err != nil {
			u.m.errors.WithLabelValues(f.Service, "udp", "write").Inc()
			continue
		}
		u.m.bytesOut.WithLabelValues(f.Service, "udp").Add(float64(n))
	}
}

func (u *udpForward) drop(k sessionKey, s *udpSession) {
	u.mu.Lock()
	if u.sessions[k] == s {
		delete(u.sessions, k)
	}
	u.mu.Unlock()
	s.up.Close()
}

// reap closes the sessions idle for longer than u.idle and returns how many
// remain.
func (u *udpForward) reap() int {
	now := u.clock.Now().UnixNano()
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, s := range u.sessions {
		if time.Duration(now-s.lastSeen.Load()) > u.idle {
			delete(u.sessions, k)
			s.up.Close()
		}
	}
	return len(u.sessions)
}

func (u *udpForward) reapLoop() {
	defer u.wg.Done()
	tick, tc := u.clock.NewTicker(u.idle / 4)
	defer tick.Stop()
	for {
		select {
		case <-u.stopCh:
			return
		case <-tc:
			u.reap()
		}
	}
}

func (u *udpForward) numSessions() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.sessions)
}

func (u *udpForward) close() {
	u.mu.Lock()
	u.closed = true
	close(u.stopCh)
	for k, s := range u.sessions {
		delete(u.sessions, k)
		s.up.Close()
	}
	u.mu.Unlock()
	for _, pc := range u.pcs {
		pc.Close()
	}
	u.wg.Wait()
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}
