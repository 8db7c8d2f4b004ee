package podbackend

import (
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/tailscale/wireguard-go/tun"
	"go4.org/netipx"
	"tailscale.com/net/tstun"
	"tailscale.com/tailcfg"
	"tailscale.com/types/logger"
	"tailscale.com/wgengine/filter"
)

// fakeTUN is a kernel TUN stand-in: Read hands out the queued batches, one
// per call, then io.EOF; Write records what it is given.
type fakeTUN struct {
	tun.Device // nil: only Read, Write and Close are called

	mu      sync.Mutex
	reads   [][][]byte
	written [][]byte
}

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reads) == 0 {
		return 0, io.EOF
	}
	batch := f.reads[0]
	f.reads = f.reads[1:]
	for i, p := range batch {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(batch), nil
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range bufs {
		f.written = append(f.written, slices.Clone(b[offset:]))
	}
	return len(bufs), nil
}

func (f *fakeTUN) Close() error { return nil }

// fakeNode is a node with a real packet filter.
type fakeNode struct {
	filt     *filter.Filter
	peerAPI  uint16
	notPlain map[netip.Addr]bool
}

func (n *fakeNode) filter() *filter.Filter { return n.filt }
func (n *fakeNode) peerAPIPort(netip.Addr) (uint16, bool) {
	return n.peerAPI, n.peerAPI != 0
}
func (n *fakeNode) plainPeer(a netip.Addr) bool { return !n.notPlain[a] }

// policy builds a node's inbound filter as the control plane's packet
// filter would make it: self is the node's address, and allow lists the
// sources that may open connections to it (on any port).
func policy(t *testing.T, self netip.Addr, allow ...netip.Addr) *filter.Filter {
	t.Helper()
	var rules []tailcfg.FilterRule
	for _, a := range allow {
		rules = append(rules, tailcfg.FilterRule{
			SrcIPs:   []string{a.String()},
			DstPorts: []tailcfg.NetPortRange{{IP: self.String(), Ports: tailcfg.PortRangeAny}},
		})
	}
	ms, err := filter.MatchesFromFilterRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	var b netipx.IPSetBuilder
	b.Add(self)
	local, _ := b.IPSet()
	return filter.New(ms, nil, local, nil, nil, logger.Discard)
}

const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
	flagSYN   = 0x02
	flagACK   = 0x10
)

// ip4 builds an IPv4 packet with a TCP or UDP header (or 8 bytes of ICMP)
// and a payload; checksums are left zero, which nothing here checks.
func ip4(proto byte, src, dst netip.Addr, sport, dport uint16, tcpFlags byte) []byte {
	var l4 []byte
	switch proto {
	case protoTCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
		l4[12] = 5 << 4
		l4[13] = tcpFlags
	case protoUDP:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
		binary.BigEndian.PutUint16(l4[4:], 8+4)
	default:
		l4 = []byte{8, 0, 0, 0, 0, 1, 0, 1}
	}
	pkt := make([]byte, 20, 20+len(l4)+4)
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(20+len(l4)+4))
	pkt[8] = 64
	pkt[9] = proto
	s, d := src.As4(), dst.As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	pkt = append(pkt, l4...)
	return append(pkt, "data"...)
}

func TestDirectPath(t *testing.T) {
	a := netip.MustParseAddr("100.64.0.1")
	b := netip.MustParseAddr("100.64.0.2")
	remote := netip.MustParseAddr("100.64.0.9")
	other := netip.MustParseAddr("10.1.2.3")

	tests := []struct {
		name       string
		pkts       [][]byte
		bAllowsA   bool // the tailnet policy lets a open connections to b
		bPeerAPI   uint16
		aJailsB    bool // a's netmap marks b jailed
		wantWG     int  // packets a's Read returns (for WireGuard), in order
		wantToB    int  // packets written to b's TUN
		wantDrops  uint64
		wantWGPkts [][]byte
	}{
		{
			name:     "allowed SYN and data go direct",
			pkts:     [][]byte{ip4(protoTCP, a, b, 40000, 80, flagSYN), ip4(protoTCP, a, b, 40000, 80, flagACK)},
			bAllowsA: true,
			wantToB:  2,
		},
		{
			name:      "policy denying a to b drops the SYN on the direct path",
			pkts:      [][]byte{ip4(protoTCP, a, b, 40000, 80, flagSYN)},
			wantDrops: 1,
		},
		{
			name:      "policy denying a to b drops a new UDP flow",
			pkts:      [][]byte{ip4(protoUDP, a, b, 40000, 53, 0)},
			wantDrops: 1,
		},
		{
			name:     "denied SYN to b's PeerAPI port is let through, as tstun does",
			pkts:     [][]byte{ip4(protoTCP, a, b, 40000, 1234, flagSYN)},
			bPeerAPI: 1234,
			wantToB:  1,
		},
		{
			name:       "a peer on another node goes through WireGuard",
			pkts:       [][]byte{ip4(protoTCP, a, remote, 40000, 80, flagSYN)},
			bAllowsA:   true,
			wantWG:     1,
			wantWGPkts: [][]byte{ip4(protoTCP, a, remote, 40000, 80, flagSYN)},
		},
		{
			name:     "ICMP goes through WireGuard",
			pkts:     [][]byte{ip4(protoICMP, a, b, 0, 0, 0)},
			bAllowsA: true,
			wantWG:   1,
		},
		{
			name:     "a source that is not the node's own goes through WireGuard",
			pkts:     [][]byte{ip4(protoTCP, other, b, 40000, 80, flagSYN)},
			bAllowsA: true,
			wantWG:   1,
		},
		{
			name:     "a jailed peer goes through WireGuard",
			pkts:     [][]byte{ip4(protoTCP, a, b, 40000, 80, flagSYN)},
			bAllowsA: true,
			aJailsB:  true,
			wantWG:   1,
		},
		{
			name: "a mixed batch keeps the WireGuard packets in order",
			pkts: [][]byte{
				ip4(protoTCP, a, remote, 40000, 80, flagACK),
				ip4(protoTCP, a, b, 40001, 80, flagACK),
				ip4(protoUDP, a, remote, 40002, 53, 0),
				ip4(protoTCP, a, b, 40001, 80, flagACK),
			},
			bAllowsA: true,
			wantWG:   2,
			wantToB:  2,
			wantWGPkts: [][]byte{
				ip4(protoTCP, a, remote, 40000, 80, flagACK),
				ip4(protoUDP, a, remote, 40002, 53, 0),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			aTUN, bTUN := &fakeTUN{reads: [][][]byte{tt.pkts}}, &fakeTUN{}
			da, db := newDirectTUN(t.Logf, aTUN), newDirectTUN(t.Logf, bTUN)
			defer da.Close()
			defer db.Close()
			var allow []netip.Addr
			if tt.bAllowsA {
				allow = append(allow, a)
			}
			an := &fakeNode{filt: policy(t, a, b), notPlain: map[netip.Addr]bool{b: tt.aJailsB}}
			bn := &fakeNode{filt: policy(t, b, allow...), peerAPI: tt.bPeerAPI}
			da.attach(an)
			db.attach(bn)
			da.setAddrs([]netip.Prefix{netip.PrefixFrom(a, 32)})
			db.setAddrs([]netip.Prefix{netip.PrefixFrom(b, 32)})

			const offset = tstun.PacketStartOffset
			bufs := make([][]byte, 8)
			for i := range bufs {
				bufs[i] = make([]byte, offset+2000)
			}
			sizes := make([]int, len(bufs))
			n, err := da.Read(bufs, sizes, offset)
			if tt.wantWG == 0 {
				// Everything was handled below the engine: Read went on
				// reading and met the fake's end.
				if n != 0 || !errors.Is(err, io.EOF) {
					t.Fatalf("Read = %d, %v; want 0, EOF", n, err)
				}
			} else if n != tt.wantWG || err != nil {
				t.Fatalf("Read = %d, %v; want %d packets for WireGuard", n, err, tt.wantWG)
			}
			for i, want := range tt.wantWGPkts {
				if got := bufs[i][offset : offset+sizes[i]]; !slices.Equal(got, want) {
					t.Errorf("WireGuard packet %d = %x, want %x", i, got, want)
				}
			}
			if len(bTUN.written) != tt.wantToB {
				t.Errorf("b's TUN got %d packets, want %d", len(bTUN.written), tt.wantToB)
			}
			if got := da.dropped.Load(); got != tt.wantDrops {
				t.Errorf("dropped %d, want %d", got, tt.wantDrops)
			}
		})
	}
}

// TestDirectPathForgotten checks that a closed pod's addresses leave the
// direct path: packets to them go to WireGuard.
func TestDirectPathForgotten(t *testing.T) {
	a := netip.MustParseAddr("100.64.1.1")
	b := netip.MustParseAddr("100.64.1.2")
	syn := ip4(protoTCP, a, b, 40000, 80, flagSYN)
	aTUN, bTUN := &fakeTUN{reads: [][][]byte{{syn}}}, &fakeTUN{}
	da, db := newDirectTUN(t.Logf, aTUN), newDirectTUN(t.Logf, bTUN)
	defer da.Close()
	da.attach(&fakeNode{filt: policy(t, a, b)})
	db.attach(&fakeNode{filt: policy(t, b, a)})
	da.setAddrs([]netip.Prefix{netip.PrefixFrom(a, 32)})
	db.setAddrs([]netip.Prefix{netip.PrefixFrom(b, 32)})
	db.Close()
	db.setAddrs([]netip.Prefix{netip.PrefixFrom(b, 32)}) // a late router call
	if lookupLocal(b) != nil {
		t.Fatal("closed pod still in the direct path")
	}
	bufs := [][]byte{make([]byte, tstun.PacketStartOffset+100)}
	sizes := []int{0}
	if n, err := da.Read(bufs, sizes, tstun.PacketStartOffset); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v; want the SYN for WireGuard", n, err)
	}
	if len(bTUN.written) != 0 {
		t.Errorf("closed pod's TUN got %d packets", len(bTUN.written))
	}
}

// TestDirectPathBothWays runs two pods' Reads at once, each delivering to
// the other (as a TCP flow and its ACKs do), for the race detector.
func TestDirectPathBothWays(t *testing.T) {
	a := netip.MustParseAddr("100.64.2.1")
	b := netip.MustParseAddr("100.64.2.2")
	const batches = 200
	aTUN, bTUN := &fakeTUN{}, &fakeTUN{}
	for range batches {
		aTUN.reads = append(aTUN.reads, [][]byte{ip4(protoTCP, a, b, 40000, 80, flagACK), ip4(protoTCP, a, b, 40000, 80, flagACK)})
		bTUN.reads = append(bTUN.reads, [][]byte{ip4(protoTCP, b, a, 80, 40000, flagACK)})
	}
	da, db := newDirectTUN(t.Logf, aTUN), newDirectTUN(t.Logf, bTUN)
	defer da.Close()
	defer db.Close()
	da.attach(&fakeNode{filt: policy(t, a, b)})
	db.attach(&fakeNode{filt: policy(t, b, a)})
	da.setAddrs([]netip.Prefix{netip.PrefixFrom(a, 32)})
	db.setAddrs([]netip.Prefix{netip.PrefixFrom(b, 32)})

	var wg sync.WaitGroup
	for _, d := range []*directTUN{da, db} {
		wg.Go(func() {
			bufs := [][]byte{make([]byte, tstun.PacketStartOffset+200), make([]byte, tstun.PacketStartOffset+200)}
			sizes := make([]int, 2)
			if n, err := d.Read(bufs, sizes, tstun.PacketStartOffset); n != 0 || !errors.Is(err, io.EOF) {
				t.Errorf("Read = %d, %v; want everything delivered, then EOF", n, err)
			}
		})
	}
	wg.Wait()
	if got := len(bTUN.written); got != 2*batches {
		t.Errorf("b got %d packets, want %d", got, 2*batches)
	}
	if got := len(aTUN.written); got != batches {
		t.Errorf("a got %d packets, want %d", got, batches)
	}
}
