// Package poddns answers a pod's DNS in the daemon: tailnet names from the pod's own node, everything else from the cluster's DNS.
//
// The pod's resolv.conf stays as kubelet wrote it (nameserver = the
// cluster DNS Service). The daemon puts the cluster DNS address and
// 100.100.100.100 on the pod's lo and listens there, inside the pod's
// netns, on UDP and TCP port 53: the pod's queries never leave it. A name
// under the tailnet's MagicDNS domain (or a single label, which the tailnet
// may know) goes to the pod's node's MagicDNS resolver; the rest is
// forwarded, unchanged, to the cluster DNS from the host's netns.
package poddns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/dns/dnsmessage"
	"tailscale.com/types/logger"
)

// QuadHundred is the tailnet's DNS address, served in every pod as well.
var QuadHundred = netip.MustParseAddr("100.100.100.100")

// Node is the pod's tailnet node: *podbackend.Backend.
type Node interface {
	// MagicDNSSuffix is the tailnet's domain, "" when unknown or off.
	MagicDNSSuffix() string
	// QueryDNS answers a query for a tailnet name.
	QueryDNS(ctx context.Context, q []byte, family string, from netip.AddrPort) ([]byte, error)
}

// Counter counts answered queries by kind: "tailnet", "forwarded", "failed".
type Counter func(kind string)

// Forwarder sends queries to the cluster's DNS. It is shared by every pod
// and safe for concurrent use.
type Forwarder struct {
	Upstream netip.AddrPort
	Timeout  time.Duration // per query; 5 s when zero
}

func (f *Forwarder) timeout() time.Duration {
	if f.Timeout <= 0 {
		return 5 * time.Second
	}
	return f.Timeout
}

// Exchange sends q to the upstream over family ("udp" or "tcp") and
// returns its answer.
func (f *Forwarder) Exchange(ctx context.Context, q []byte, family string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout())
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, family, f.Upstream.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if family == "tcp" {
		if err := writeTCP(c, q); err != nil {
			return nil, err
		}
		return readTCP(c)
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if n >= 2 && len(q) >= 2 && buf[0] == q[0] && buf[1] == q[1] {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

// Server serves one pod. Close stops it.
type Server struct {
	logf  logger.Logf
	node  Node
	fwd   *Forwarder
	count Counter

	udp []net.PacketConn
	tcp []net.Listener
	wg  sync.WaitGroup
	ctx context.Context
	end context.CancelFunc
}

// Serve listens inside the netns at netnsPath on port 53 of addrs (which
// must be on the pod's lo already) and answers until Close.
func Serve(logf logger.Logf, netnsPath string, addrs []netip.Addr, node Node, fwd *Forwarder, count Counter) (*Server, error) {
	if count == nil {
		count = func(string) {}
	}
	s := &Server{logf: logf, node: node, fwd: fwd, count: count}
	s.ctx, s.end = context.WithCancel(context.Background())
	// A socket belongs to the netns it was made in, whatever thread later
	// uses it: make them on a thread switched into the pod's netns.
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		for _, a := range addrs {
			ap := netip.AddrPortFrom(a, 53)
			pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
			if err != nil {
				return fmt.Errorf("listening on udp %v in the pod: %w", ap, err)
			}
			s.udp = append(s.udp, pc)
			ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
			if err != nil {
				return fmt.Errorf("listening on tcp %v in the pod: %w", ap, err)
			}
			s.tcp = append(s.tcp, ln)
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	for _, pc := range s.udp {
		s.wg.Go(func() { s.serveUDP(pc) })
	}
	for _, ln := range s.tcp {
		s.wg.Go(func() { s.serveTCP(ln) })
	}
	return s, nil
}

// Close stops serving and waits for the listeners' goroutines.
func (s *Server) Close() {
	s.end()
	for _, pc := range s.udp {
		pc.Close()
	}
	for _, ln := range s.tcp {
		ln.Close()
	}
	s.wg.Wait()
}

func (s *Server) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 4096)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := append([]byte(nil), buf[:n]...)
		// One goroutine per query: a forwarded one may wait seconds, and
		// must not hold up a tailnet name behind it.
		go func() {
			ua, _ := from.(*net.UDPAddr)
			if out := s.Answer(s.ctx, q, "udp", ua.AddrPort()); out != nil {
				_, _ = pc.WriteTo(out, from)
			}
		}()
	}
}

func (s *Server) serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			ta, _ := c.RemoteAddr().(*net.TCPAddr)
			for {
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				q, err := readTCP(c)
				if err != nil {
					return
				}
				out := s.Answer(s.ctx, q, "tcp", ta.AddrPort())
				if out == nil || writeTCP(c, out) != nil {
					return
				}
			}
		}()
	}
}

// Answer answers one query: from the tailnet for its names, from the
// cluster DNS for the rest; SERVFAIL when that fails, nil when q is not a
// DNS query at all. Safe for concurrent use.
func (s *Server) Answer(ctx context.Context, q []byte, family string, from netip.AddrPort) []byte {
	out, kind, err := s.answer(ctx, q, family, from)
	if err != nil {
		s.count("failed")
		s.logf("dns: %s query: %v", kind, err)
		return servfail(q)
	}
	s.count(kind)
	return out
}

func (s *Server) answer(ctx context.Context, q []byte, family string, from netip.AddrPort) ([]byte, string, error) {
	var msg dnsmessage.Message
	suffix := strings.ToLower(strings.TrimSuffix(s.node.MagicDNSSuffix(), "."))
	if suffix == "" || msg.Unpack(q) != nil || len(msg.Questions) != 1 {
		return s.forward(ctx, q, family)
	}
	qn := msg.Questions[0].Name.String()
	name := strings.ToLower(qn)
	if name == suffix+"." || strings.HasSuffix(name, "."+suffix+".") {
		out, err := s.node.QueryDNS(ctx, q, family, from)
		return out, "tailnet", err
	}
	if strings.Count(name, ".") != 1 || name == "." {
		return s.forward(ctx, q, family)
	}
	// A single label: the tailnet's if one of its nodes has that name
	// (as `tailscale` clients resolve it through their search domain),
	// the cluster DNS's otherwise.
	full, err := dnsmessage.NewName(strings.TrimSuffix(qn, ".") + "." + suffix + ".")
	if err != nil {
		return s.forward(ctx, q, family)
	}
	tq := msg
	tq.Questions = []dnsmessage.Question{{Name: full, Type: msg.Questions[0].Type, Class: msg.Questions[0].Class}}
	tb, err := tq.Pack()
	if err != nil {
		return s.forward(ctx, q, family)
	}
	tout, err := s.node.QueryDNS(ctx, tb, family, from)
	if err != nil {
		return s.forward(ctx, q, family)
	}
	var resp dnsmessage.Message
	if resp.Unpack(tout) != nil || resp.RCode != dnsmessage.RCodeSuccess || len(resp.Answers) == 0 {
		return s.forward(ctx, q, family)
	}
	resp.Questions = msg.Questions
	for i := range resp.Answers {
		if strings.EqualFold(resp.Answers[i].Header.Name.String(), full.String()) {
			resp.Answers[i].Header.Name = msg.Questions[0].Name
		}
	}
	out, err := resp.Pack()
	return out, "tailnet", err
}

func (s *Server) forward(ctx context.Context, q []byte, family string) ([]byte, string, error) {
	if s.fwd == nil {
		return nil, "forwarded", errors.New("no upstream DNS configured")
	}
	out, err := s.fwd.Exchange(ctx, q, family)
	return out, "forwarded", err
}

// servfail is q turned into a SERVFAIL answer, or nil when q does not
// parse.
func servfail(q []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil
	}
	qs, _ := p.AllQuestions()
	h.Response, h.RCode = true, dnsmessage.RCodeServerFailure
	out, err := (&dnsmessage.Message{Header: h, Questions: qs}).Pack()
	if err != nil {
		return nil
	}
	return out
}

func readTCP(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

func writeTCP(w io.Writer, b []byte) error {
	if len(b) > 65535 {
		return errors.New("dns message too long for TCP")
	}
	out := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(out, uint16(len(b)))
	copy(out[2:], b)
	_, err := w.Write(out)
	return err
}
