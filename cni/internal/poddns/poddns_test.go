package poddns

import (
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeNode answers web-1.ts.test and NXDOMAIN for the rest of ts.test,
// as a node's MagicDNS resolver does.
type fakeNode struct{ asked []string }

func (n *fakeNode) MagicDNSSuffix() string { return "ts.test" }

func (n *fakeNode) QueryDNS(_ context.Context, q []byte, _ string, _ netip.AddrPort) ([]byte, error) {
	var m dnsmessage.Message
	if err := m.Unpack(q); err != nil {
		return nil, err
	}
	n.asked = append(n.asked, m.Questions[0].Name.String())
	m.Response = true
	if m.Questions[0].Name.String() == "web-1.ts.test." {
		m.Answers = []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
			Body:   &dnsmessage.AResource{A: [4]byte{100, 64, 0, 7}},
		}}
	} else {
		m.RCode = dnsmessage.RCodeNameError
	}
	return m.Pack()
}

// upstream is a cluster DNS on loopback that answers every name with
// 10.96.0.10.
func upstream(t *testing.T) (netip.AddrPort, *atomic.Int64) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	n := new(atomic.Int64)
	go func() {
		buf := make([]byte, 4096)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			n.Add(1)
			var m dnsmessage.Message
			if m.Unpack(buf[:k]) != nil {
				continue
			}
			m.Response = true
			m.Answers = []dnsmessage.Resource{{
				Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
				Body:   &dnsmessage.AResource{A: [4]byte{10, 96, 0, 10}},
			}}
			out, _ := m.Pack()
			_, _ = pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort(), n
}

func TestAnswer(t *testing.T) {
	up, upN := upstream(t)
	for _, tc := range []struct {
		name      string
		wantRCode dnsmessage.RCode
		wantA     [4]byte
		wantFrom  string // "tailnet" or "forwarded"
	}{
		{"web-1.ts.test.", dnsmessage.RCodeSuccess, [4]byte{100, 64, 0, 7}, "tailnet"},
		{"web-1.", dnsmessage.RCodeSuccess, [4]byte{100, 64, 0, 7}, "tailnet"},
		{"nosuch.ts.test.", dnsmessage.RCodeNameError, [4]byte{}, "tailnet"},
		{"nosuch.", dnsmessage.RCodeSuccess, [4]byte{10, 96, 0, 10}, "forwarded"},
		{"kube-dns.kube-system.svc.cluster.local.", dnsmessage.RCodeSuccess, [4]byte{10, 96, 0, 10}, "forwarded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var kinds []string
			s := &Server{logf: t.Logf, node: &fakeNode{}, fwd: &Forwarder{Upstream: up}, count: func(k string) { kinds = append(kinds, k) }}
			before := upN.Load()
			q, _ := (&dnsmessage.Message{
				Header:    dnsmessage.Header{ID: 77, RecursionDesired: true},
				Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(tc.name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
			}).Pack()
			out := s.Answer(context.Background(), q, "udp", netip.MustParseAddrPort("100.64.0.9:5353"))
			var m dnsmessage.Message
			if err := m.Unpack(out); err != nil {
				t.Fatal(err)
			}
			if m.ID != 77 || m.RCode != tc.wantRCode || m.Questions[0].Name.String() != tc.name {
				t.Fatalf("answer %+v", m)
			}
			if tc.wantRCode == dnsmessage.RCodeSuccess {
				if len(m.Answers) != 1 || m.Answers[0].Body.(*dnsmessage.AResource).A != tc.wantA || m.Answers[0].Header.Name.String() != tc.name {
					t.Fatalf("answers %+v, want %v for %s", m.Answers, tc.wantA, tc.name)
				}
			}
			if len(kinds) != 1 || kinds[0] != tc.wantFrom {
				t.Errorf("counted %v, want %s", kinds, tc.wantFrom)
			}
			if forwarded := upN.Load() > before; forwarded != (tc.wantFrom == "forwarded") {
				t.Errorf("upstream asked: %v", forwarded)
			}
		})
	}
}

// BenchmarkServeMemory measures what the listeners of one pod cost the
// daemon (heap and goroutine stacks per Server: its four sockets' buffers
// and goroutines), with 200 servers on loopback addresses of the test's
// own netns. Root (port 53); it skips without.
func BenchmarkServeMemory(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to listen on port 53")
	}
	const n = 200
	mem := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	for range b.N {
		before := mem()
		var srvs []*Server
		for i := range n {
			a := netip.AddrFrom4([4]byte{127, 53, byte(i / 100), byte(1 + 2*(i%100))})
			s, err := Serve(b.Logf, "/proc/self/ns/net", []netip.Addr{a, a.Next()}, &fakeNode{}, &Forwarder{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			srvs = append(srvs, s)
		}
		per := float64(mem()-before) / n
		for _, s := range srvs {
			s.Close()
		}
		b.ReportMetric(per/1024, "KiB/pod")
		b.Logf("%d pods' DNS listeners (2 addresses, UDP and TCP each): %.1f KiB of heap and stacks per pod", n, per/1024)
	}
}
