package adapter

import (
	"bufio"
	"bytes"
	"net"
	"sync"
	"time"
)

// The adapter serves gRPC and plain HTTP (/healthz, /metrics) on one port,
// since a tailnet policy usually opens exactly one (tcp:3621). Every gRPC
// connection starts with the HTTP/2 client preface; anything else is HTTP/1.

var http2Preface = []byte("PRI * HTTP/2.0")

// splitListener accepts from l and hands each connection to the gRPC or the
// HTTP listener by its first bytes.
type splitListener struct {
	l    net.Listener
	grpc *chanListener
	http *chanListener
}

func newSplitListener(l net.Listener) *splitListener {
	s := &splitListener{l: l, grpc: newChanListener(l.Addr()), http: newChanListener(l.Addr())}
	go s.run()
	return s
}

func (s *splitListener) run() {
	for {
		c, err := s.l.Accept()
		if err != nil {
			s.grpc.closeWith(err)
			s.http.closeWith(err)
			return
		}
		go s.route(c)
	}
}

// prefaceTimeout bounds how long a connection may stay silent before it is
// classified; a client that never speaks is dropped.
const prefaceTimeout = 10 * time.Second

func (s *splitListener) route(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(prefaceTimeout))
	br := bufio.NewReaderSize(c, 64)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	isGRPC := false
	if first[0] == http2Preface[0] {
		// POST and PUT start with P too; both send more than the
		// preface's length before waiting for an answer.
		head, _ := br.Peek(len(http2Preface))
		isGRPC = bytes.Equal(head, http2Preface)
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, r: br}
	if isGRPC {
		s.grpc.deliver(pc)
	} else {
		s.http.deliver(pc)
	}
}

func (s *splitListener) Close() error { return s.l.Close() }

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener is a net.Listener fed by splitListener.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn

	mu     sync.Mutex
	err    error
	closed chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		l.mu.Lock()
		defer l.mu.Unlock()
		return nil, l.err
	}
}

func (l *chanListener) closeWith(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.closed:
	default:
		if err == nil {
			err = net.ErrClosed
		}
		l.err = err
		close(l.closed)
	}
}

func (l *chanListener) Close() error {
	l.closeWith(net.ErrClosed)
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
