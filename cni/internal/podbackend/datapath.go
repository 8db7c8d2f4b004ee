package podbackend

// Same-node direct delivery. Two pods on one node are two tailnet nodes in
// one daemon process, so a packet from one to the other would otherwise be
// read from the sender's TUN, encrypted, sent over UDP on the host,
// received, decrypted and written to the receiver's TUN: all of it in this
// process, on this host, for bytes that never leave it. directTUN instead
// hands such a packet from the sender's TUN straight to the receiver's,
// after running the same two packet filters the WireGuard path runs (the
// sender's outbound filter, RunOut, as tstun.Wrapper does before
// encrypting, and the receiver's inbound filter, RunIn, as its Wrapper does
// after decrypting), so the tailnet policy holds exactly as before.
//
// It sits under tstun.Wrapper, as the tun.Device the engine wraps: it reads
// the kernel TUN's batch (one TCP/UDP super-packet split into segments by
// wireguard-go), takes out the packets it delivers or drops, and returns
// the rest to the Wrapper, which sends them over WireGuard as usual. The
// receiver's TUN gets each batch in one Write, which wireguard-go coalesces
// (GRO) back into super-packets, so the kernel sees what it would have
// seen from WireGuard, minus the cryptography and the UDP round trip.
//
// What takes the direct path: TCP and UDP between the two nodes' own
// tailnet addresses, both nodes in this daemon, each a plain peer in the
// other's view (not jailed, no masquerade address, so neither the jailed
// filter nor the Wrapper's NAT would apply). Everything else (ICMP, whose
// echo replies the engine may be waiting for; TSMP; fragments; peers on
// other nodes) goes through WireGuard. Not kept for direct packets: the
// engine's per-peer byte counters (`tailscale status`), packet capture,
// and the TSMP "rejected" notice for a refused SYN (the SYN is dropped all
// the same).

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tailscale/wireguard-go/tun"
	"tailscale.com/envknob"
	"tailscale.com/ipn/ipnlocal"
	"tailscale.com/net/packet"
	"tailscale.com/net/tstun"
	"tailscale.com/types/ipproto"
	"tailscale.com/types/logger"
	"tailscale.com/wgengine/filter"
)

// directEnabled reports whether same-node direct delivery is on:
// TS_CNI_SAME_NODE_DIRECT=false turns it off, to measure or rule out the
// shortcut. Read once, at the first pod.
var directEnabled = sync.OnceValue(func() bool { return envknob.BoolDefaultTrue("TS_CNI_SAME_NODE_DIRECT") })

// peerCheckTTL is how long a verdict on whether a peer is plain (see
// node.plainPeer) is kept. Jailing and masquerade addresses are rare
// attributes set by the control plane; the packet filters, which carry the
// tailnet policy, are read afresh for every packet.
const peerCheckTTL = time.Second

// filterFlags log drops as tstun.Wrapper does. Not accepts: checking
// whether to log one took 10% of the direct path's CPU (a profile under
// iperf3), for lines the daemon's quiet log drops anyway.
const filterFlags = filter.LogDrops

// node is what the direct path needs of one pod's tailnet node.
// filter and plainPeer are called on the datapath and must be safe for
// concurrent use.
type node interface {
	// filter is the node's current packet filter; nil drops everything,
	// as in tstun.Wrapper.
	filter() *filter.Filter
	// peerAPIPort is the node's PeerAPI port on addr, which its Wrapper
	// lets through whatever the filter says.
	peerAPIPort(addr netip.Addr) (uint16, bool)
	// plainPeer reports whether addr belongs to a peer in the node's
	// netmap that is neither jailed nor reached through a masquerade
	// address.
	plainPeer(addr netip.Addr) bool
}

// localNodes maps the tailnet addresses of this daemon's pods to their
// TUNs. Readers load the map without locking; writers copy it under mu.
var localNodes struct {
	mu     sync.Mutex
	byAddr atomic.Pointer[map[netip.Addr]*directTUN]
}

func lookupLocal(a netip.Addr) *directTUN {
	m := localNodes.byAddr.Load()
	if m == nil {
		return nil
	}
	return (*m)[a]
}

// setLocal makes addrs the addresses of d in localNodes (none, or d
// closed, removes it). Checking closed under the lock keeps a router call
// racing with Close from putting a closed TUN back.
func setLocal(d *directTUN, addrs []netip.Addr) {
	localNodes.mu.Lock()
	defer localNodes.mu.Unlock()
	if d.closed.Load() {
		addrs = nil
	}
	m := map[netip.Addr]*directTUN{}
	if old := localNodes.byAddr.Load(); old != nil {
		for a, o := range *old {
			if o != d {
				m[a] = o
			}
		}
	}
	for _, a := range addrs {
		m[a] = d
	}
	localNodes.byAddr.Store(&m)
}

// directTUN is one pod's kernel TUN as its engine sees it. The embedded
// Device's methods are the TUN's own; Read diverts same-node packets.
type directTUN struct {
	tun.Device
	logf logger.Logf
	// dropf logs refused packets, a few a minute: the filters' own logs
	// do not say which path a packet took.
	dropf logger.Logf

	// n is the pod's node, set once its LocalBackend exists; nil until
	// then, and the direct path stays off.
	n atomic.Pointer[node]
	// addrs are the node's own tailnet addresses, the only sources the
	// direct path carries.
	addrs  atomic.Pointer[[]netip.Addr]
	closed atomic.Bool

	// Read's state: tstun.Wrapper reads from one goroutine, but the lock
	// keeps Read correct for any caller.
	mu     sync.Mutex
	p      packet.Parsed
	checks map[netip.Addr]peerCheck // plainPeer verdicts, by peer address
	out    []batch                  // this Read's packets, by receiver

	// rmu guards rchecks: this node's plainPeer verdicts on senders, asked
	// by the senders' Reads.
	rmu     sync.Mutex
	rchecks map[netip.Addr]peerCheck

	delivered, dropped atomic.Uint64 // packets, for tests and logs
}

type peerCheck struct {
	plain bool
	at    time.Time
}

// batch is the packets of one Read for one receiver.
type batch struct {
	to   *directTUN
	bufs [][]byte
}

// newDirectTUN wraps dev, a pod's kernel TUN.
func newDirectTUN(logf logger.Logf, dev tun.Device) *directTUN {
	return &directTUN{
		Device: dev,
		logf:   logf,
		dropf:  logger.RateLimitedFn(logf, time.Minute, 5, 64),
		checks: map[netip.Addr]peerCheck{},
	}
}

// attach gives d its node once the LocalBackend exists.
func (d *directTUN) attach(n node) { d.n.Store(&n) }

// setAddrs records the node's tailnet addresses and publishes them to the
// other pods' TUNs.
func (d *directTUN) setAddrs(ps []netip.Prefix) {
	addrs := make([]netip.Addr, 0, len(ps))
	for _, p := range ps {
		addrs = append(addrs, p.Addr())
	}
	d.addrs.Store(&addrs)
	setLocal(d, addrs)
}

func (d *directTUN) owns(a netip.Addr) bool {
	p := d.addrs.Load()
	if p == nil {
		return false
	}
	for _, o := range *p {
		if o == a {
			return true
		}
	}
	return false
}

// forget takes d out of the direct path; packets to its addresses go
// through WireGuard (and find no one) from then on.
func (d *directTUN) forget() {
	d.closed.Store(true)
	setLocal(d, nil)
}

// Close forgets d and closes the TUN.
func (d *directTUN) Close() error {
	d.forget()
	return d.Device.Close()
}

// DisableUDPGRO and DisableTCPGRO pass tstun's GRO settings to the TUN.
func (d *directTUN) DisableUDPGRO() {
	if g, ok := d.Device.(tun.GRODevice); ok {
		g.DisableUDPGRO()
	}
}

func (d *directTUN) DisableTCPGRO() {
	if g, ok := d.Device.(tun.GRODevice); ok {
		g.DisableTCPGRO()
	}
}

// Read reads the TUN and returns the packets that must go through
// WireGuard. Packets for another local pod are written to that pod's TUN,
// or dropped when a filter refuses them, before Read returns. It never
// returns zero packets without an error: it reads again instead.
func (d *directTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		n, err := d.Device.Read(bufs, sizes, offset)
		if n == 0 || !directEnabled() || d.n.Load() == nil {
			return n, err
		}
		k := d.divert(bufs[:n], sizes[:n], offset)
		if k > 0 || err != nil {
			return k, err
		}
	}
}

// divert delivers or drops the packets of bufs that take the direct path,
// moves the others to the front of bufs (and their sizes with them), and
// returns how many those are.
func (d *directTUN) divert(bufs [][]byte, sizes []int, offset int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.out = d.out[:0]
	keep := 0
	now := time.Now()
	for i := range bufs {
		pkt := bufs[i][offset : offset+sizes[i]]
		to, verdict := d.route(pkt, now)
		switch verdict {
		case viaWireGuard:
			bufs[keep], bufs[i] = bufs[i], bufs[keep]
			sizes[keep] = sizes[i]
			keep++
			continue
		case drop:
			d.dropped.Add(1)
			continue
		}
		j := 0
		for j < len(d.out) && d.out[j].to != to {
			j++
		}
		if j == len(d.out) {
			// Reuse the batch slots (and their bufs arrays) of earlier Reads.
			if j < cap(d.out) {
				d.out = d.out[:j+1]
				d.out[j] = batch{to: to, bufs: d.out[j].bufs[:0]}
			} else {
				d.out = append(d.out, batch{to: to})
			}
		}
		// Packets to deliver are swapped behind the kept ones only after
		// delivery; until then bufs[i] is theirs.
		d.out[j].bufs = append(d.out[j].bufs, bufs[i][:offset+sizes[i]])
	}
	for j := range d.out {
		b := &d.out[j]
		if _, err := b.to.Write(b.bufs, offset); err != nil && !b.to.closed.Load() {
			d.logf("direct delivery to %v: %v", b.to.firstAddr(), err)
		}
		d.delivered.Add(uint64(len(b.bufs)))
		clear(b.bufs)
	}
	return keep
}

func (d *directTUN) firstAddr() netip.Addr {
	if p := d.addrs.Load(); p != nil && len(*p) > 0 {
		return (*p)[0]
	}
	return netip.Addr{}
}

type verdict int

const (
	viaWireGuard verdict = iota
	deliver
	drop
)

// route decides one packet's path. Only the caller's goroutine (holding
// d.mu) uses d.p and d.checks.
func (d *directTUN) route(pkt []byte, now time.Time) (*directTUN, verdict) {
	p := &d.p
	p.Decode(pkt)
	if p.IPVersion != 4 && p.IPVersion != 6 || p.IPProto != ipproto.TCP && p.IPProto != ipproto.UDP {
		return nil, viaWireGuard
	}
	src, dst := p.Src.Addr(), p.Dst.Addr()
	to := lookupLocal(dst)
	if to == nil || to == d || to.closed.Load() || !d.owns(src) {
		return nil, viaWireGuard
	}
	from, toNode := d.n.Load(), to.n.Load()
	if from == nil || toNode == nil || !d.plain(*from, dst, now) || !to.plainFor(*toNode, src, now) {
		return nil, viaWireGuard
	}
	// From here on the packet is ours to deliver or drop: what the
	// sender's Wrapper would do before encrypting, then what the
	// receiver's would do after decrypting.
	if f := (*from).filter(); f == nil {
		return nil, d.refused(p, "sender: no packet filter yet")
	} else if r, _ := f.RunOut(p, filterFlags); r != filter.Accept {
		return nil, d.refused(p, "sender's packet filter")
	}
	f := (*toNode).filter()
	if f == nil {
		return nil, d.refused(p, "receiver: no packet filter yet")
	}
	if f.RunIn(p, filterFlags) != filter.Accept {
		// tstun lets a SYN to the receiver's PeerAPI through; its ACLs are
		// checked at L7.
		port, ok := (*toNode).peerAPIPort(dst)
		if p.IPProto != ipproto.TCP || p.TCPFlags&packet.TCPSyn == 0 || !ok || port != p.Dst.Port() {
			return nil, d.refused(p, "receiver's packet filter")
		}
	}
	return to, deliver
}

// refused logs a packet the direct path drops, and returns drop.
func (d *directTUN) refused(p *packet.Parsed, by string) verdict {
	d.dropf("direct: dropped %v %v -> %v: refused by the %s", p.IPProto, p.Src, p.Dst, by)
	return drop
}

// plain is n.plainPeer(peer), remembered for peerCheckTTL. d.mu is held.
func (d *directTUN) plain(n node, peer netip.Addr, now time.Time) bool {
	if c, ok := d.checks[peer]; ok && now.Sub(c.at) < peerCheckTTL {
		return c.plain
	}
	if len(d.checks) > 4096 {
		clear(d.checks) // peers come and go; never grow without bound
	}
	v := n.plainPeer(peer)
	if c, ok := d.checks[peer]; v && (!ok || !c.plain) {
		d.logf("direct: %v -> %v stays on this node, past WireGuard", d.firstAddr(), peer)
	}
	d.checks[peer] = peerCheck{plain: v, at: now}
	return v
}

// plainFor is plain on the receiver's side, from the sender's goroutine:
// the receiver's verdict cache is guarded by its own mutex, which its own
// Read may hold, so the receiver's view is cached in a separate map.
func (d *directTUN) plainFor(n node, peer netip.Addr, now time.Time) bool {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	if c, ok := d.rchecks[peer]; ok && now.Sub(c.at) < peerCheckTTL {
		return c.plain
	}
	if d.rchecks == nil || len(d.rchecks) > 4096 {
		d.rchecks = map[netip.Addr]peerCheck{}
	}
	v := n.plainPeer(peer)
	d.rchecks[peer] = peerCheck{plain: v, at: now}
	return v
}

// lbNode is a node backed by a LocalBackend and its tstun.Wrapper.
type lbNode struct {
	lb *ipnlocal.LocalBackend
	w  *tstun.Wrapper
}

func (n lbNode) filter() *filter.Filter { return n.w.GetFilter() }

func (n lbNode) peerAPIPort(a netip.Addr) (uint16, bool) {
	if n.w.PeerAPIPort == nil {
		return 0, false
	}
	return n.w.PeerAPIPort(a)
}

func (n lbNode) plainPeer(a netip.Addr) bool {
	nv, _, ok := n.lb.WhoIs("", netip.AddrPortFrom(a, 0))
	if !ok || !nv.Valid() || nv.IsJailed() {
		return false
	}
	if self := n.lb.NetMapNoPeers(); self != nil && self.SelfNode.Valid() && self.SelfNode.ID() == nv.ID() {
		return false
	}
	return !nv.SelfNodeV4MasqAddrForThisPeer().Valid() && !nv.SelfNodeV6MasqAddrForThisPeer().Valid()
}

// useDirect puts dev, the pod's kernel TUN, under the direct path and
// returns the device the engine gets.
func (b *Backend) useDirect(dev tun.Device) tun.Device {
	b.direct = newDirectTUN(b.logf, dev)
	return b.direct
}

// directAddrs wraps the router's onAddrs so that the direct path learns
// the node's addresses first.
func (b *Backend) directAddrs(next func([]netip.Prefix)) func([]netip.Prefix) {
	return func(addrs []netip.Prefix) {
		b.direct.setAddrs(addrs)
		if next != nil {
			next(addrs)
		}
	}
}
