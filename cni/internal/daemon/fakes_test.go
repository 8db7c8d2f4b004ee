package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"tailscale.com/ipn"
	"tailscale.com/net/netmon"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/cni/internal/podbackend"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
	"tsymbiote.dhouti.dev/controlplane"
)

// The fakes below stand in for the kernel, the control plane and the pod
// backends. Each records what it made (made, in order, by kind) and what
// is alive now (live), so that a test can say both how far an ADD got and
// that nothing of it is left. All are safe for concurrent use: the Manager
// calls them from ADDs, DELs, recovery and backend callbacks at once.

// fakeNet is the kernel: network namespaces, and per pod its rules and
// table, its veth and its TUN (which fakeBackends creates), by name.
type fakeNet struct {
	mu    sync.Mutex
	netns map[string]bool           // paths that are network namespaces
	live  map[string]bool           // "rules:<host veth>", "veth:<name>", "tun:<name>"
	made  []string                  // kinds, in order: "rules", "veth", "tun"
	fail  map[string]error          // method name -> the error it returns
	addrs map[string][]netip.Prefix // ts0's addresses by host veth
	swept int
}

func newFakeNet() *fakeNet {
	return &fakeNet{netns: map[string]bool{}, live: map[string]bool{}, fail: map[string]error{}, addrs: map[string][]netip.Prefix{}}
}

func (f *fakeNet) failing(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail[op]
}

func (f *fakeNet) create(kind, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.live[kind+":"+name] = true
	f.made = append(f.made, kind)
}

func (f *fakeNet) has(kind, name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[kind+":"+name]
}

func (f *fakeNet) liveObjects() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.live {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (f *fakeNet) addNetNS(path string) { f.mu.Lock(); f.netns[path] = true; f.mu.Unlock() }
func (f *fakeNet) delNetNS(path string) { f.mu.Lock(); delete(f.netns, path); f.mu.Unlock() }

func (f *fakeNet) CheckNetNS(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.netns[path] {
		return fmt.Errorf("open %s: %w", path, os.ErrNotExist)
	}
	return nil
}

func (f *fakeNet) EnableForwarding(bool) error { return f.failing("EnableForwarding") }

func (f *fakeNet) PrepareHost(p podnet.Pod) error {
	if err := f.failing("PrepareHost"); err != nil {
		return err
	}
	f.create("rules", p.HostVeth)
	return nil
}

func (f *fakeNet) AttachPod(_ logger.Logf, p podnet.Pod, addrs []netip.Prefix) ([]netip.Prefix, error) {
	if err := f.failing("AttachPod"); err != nil {
		return nil, err
	}
	if !f.has("veth", p.HostVeth) {
		f.create("veth", p.HostVeth)
	}
	f.mu.Lock()
	f.addrs[p.HostVeth] = slices.Clone(addrs)
	f.mu.Unlock()
	return addrs, nil
}

func (f *fakeNet) PodMAC(p podnet.Pod) (string, error) {
	if err := f.failing("PodMAC"); err != nil {
		return "", err
	}
	return "02:00:00:00:00:01", nil
}

func (f *fakeNet) Check(p podnet.Pod, addrs []netip.Prefix) error {
	if err := f.failing("Check"); err != nil {
		return err
	}
	if !f.has("veth", p.HostVeth) {
		return errors.New("ts0 is missing")
	}
	return nil
}

func (f *fakeNet) Teardown(p podnet.Pod) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range []string{"rules:" + p.HostVeth, "veth:" + p.HostVeth, "tun:" + p.TUN} {
		delete(f.live, k)
	}
	delete(f.addrs, p.HostVeth)
	return f.fail["Teardown"]
}

func (f *fakeNet) Sweep(_ logger.Logf, keepLink func(string) bool, _ func(int) bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k := range f.live {
		_, name, _ := cutKind(k)
		if !keepLink(name) {
			delete(f.live, k)
			n++
		}
	}
	f.swept += n
	return n, nil
}

func cutKind(k string) (kind, name string, ok bool) {
	for i := range k {
		if k[i] == ':' {
			return k[:i], k[i+1:], true
		}
	}
	return "", k, false
}

// fakeCP is the control plane: auth keys, the nodes registered with them,
// and every DeleteDevice call.
type fakeCP struct {
	mu      sync.Mutex
	keyErr  error           // CreateAuthKey's error
	down    bool            // DeleteDevice cannot reach it
	stuck   map[string]bool // node IDs whose deletion always fails
	nodes   map[string]bool // registered nodes
	keys    int
	calls   map[string]int // DeleteDevice calls by node ID
	deleted map[string]int // successful deletions by node ID
}

func newFakeCP() *fakeCP {
	return &fakeCP{stuck: map[string]bool{}, nodes: map[string]bool{}, calls: map[string]int{}, deleted: map[string]int{}}
}

func (c *fakeCP) ControlURL() string { return "http://control.invalid" }

func (c *fakeCP) CreateAuthKey(_ context.Context, req controlplane.AuthKeyRequest) (*controlplane.AuthKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keyErr != nil {
		return nil, c.keyErr
	}
	c.keys++
	return &controlplane.AuthKey{ID: fmt.Sprint(c.keys), Key: controlplane.Secret(fmt.Sprintf("tskey-%d", c.keys)), Tags: req.Tags}, nil
}

func (c *fakeCP) DeleteDevice(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[id]++
	if c.down || c.stuck[id] {
		return errors.New("dial tcp 192.0.2.1:443: connect: connection refused")
	}
	if !c.nodes[id] {
		return fmt.Errorf("node %s: %w", id, controlplane.ErrNotFound)
	}
	delete(c.nodes, id)
	c.deleted[id]++
	return nil
}

func (c *fakeCP) register(id string) { c.mu.Lock(); c.nodes[id] = true; c.mu.Unlock() }

func (c *fakeCP) setDown(down bool) { c.mu.Lock(); c.down = down; c.mu.Unlock() }

func (c *fakeCP) liveNodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id := range c.nodes {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (c *fakeCP) counts(id string) (calls, deleted int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id], c.deleted[id]
}

// fakeBackends starts fake pod nodes. A node's identity is a file in its
// state dir, as the real FileStore's is: a node started without an auth
// key comes back with it.
type fakeBackends struct {
	net *fakeNet
	cp  *fakeCP

	mu      sync.Mutex
	fail    map[string]error // "Start" or "Wait" -> the error
	block   chan struct{}    // when set, waits for the node block until it is closed
	state   ipn.State        // every node's state; Running when zero
	nodes   int
	live    map[string]*fakeBackend // by TUN
	started int
}

func newFakeBackends(n *fakeNet, cp *fakeCP) *fakeBackends {
	return &fakeBackends{net: n, cp: cp, fail: map[string]error{}, live: map[string]*fakeBackend{}}
}

const fakeIdentity = "fake-identity"

func (f *fakeBackends) start(_ logger.Logf, cfg podbackend.Config) (PodBackend, error) {
	f.mu.Lock()
	err := f.fail["Start"]
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	b := &fakeBackend{f: f, cfg: cfg}
	if cfg.AuthKey == "" {
		id, err := os.ReadFile(filepath.Join(cfg.StateDir, fakeIdentity))
		if err != nil {
			return nil, fmt.Errorf("no stored identity: %w", err)
		}
		b.nodeID = string(id)
	}
	if cfg.Socket != "" {
		if err := b.ServeSocket(cfg.Socket); err != nil {
			return nil, err
		}
	}
	f.net.create("tun", cfg.Pod.TUN)
	f.mu.Lock()
	f.live[cfg.Pod.TUN] = b
	f.started++
	f.mu.Unlock()
	return b, nil
}

func (f *fakeBackends) setFail(op string, err error) { f.mu.Lock(); f.fail[op] = err; f.mu.Unlock() }

func (f *fakeBackends) byTUN(tun string) *fakeBackend {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[tun]
}

func (f *fakeBackends) liveCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

// fakeBackend is one fake pod node.
type fakeBackend struct {
	f   *fakeBackends
	cfg podbackend.Config

	mu       sync.Mutex
	nodeID   string
	relayed  int
	closed   bool
	socket   string // served LocalAPI socket, "" for none
	hostname string // as the control plane names the node
}

// addrsFor gives a node addresses derived from its ID, so that a node that
// comes back with its identity comes back with its addresses.
func addrsFor(nodeID string) []netip.Prefix {
	var n byte
	for _, c := range []byte(nodeID) {
		n += c
	}
	return []netip.Prefix{
		netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, n}), 32),
		netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 15: n}), 128),
	}
}

// register is the node logging in: with a key it becomes a new node, whose
// identity it stores; without, it is the stored one.
func (b *fakeBackend) register(ctx context.Context) (*podbackend.Running, error) {
	b.f.mu.Lock()
	err, block := b.f.fail["Wait"], b.f.block
	b.f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nodeID == "" {
		b.f.mu.Lock()
		b.f.nodes++
		b.nodeID = fmt.Sprintf("n%d", b.f.nodes)
		b.f.mu.Unlock()
		if err := os.WriteFile(filepath.Join(b.cfg.StateDir, fakeIdentity), []byte(b.nodeID), 0o600); err != nil {
			return nil, err
		}
		b.f.cp.register(b.nodeID)
		b.f.net.mu.Lock()
		b.f.net.made = append(b.f.net.made, "node")
		b.f.net.mu.Unlock()
	}
	return &podbackend.Running{NodeID: b.nodeID, Addrs: addrsFor(b.nodeID)}, nil
}

func (b *fakeBackend) WaitAddresses(ctx context.Context) (*podbackend.Running, error) {
	return b.register(ctx)
}

func (b *fakeBackend) WaitRunning(ctx context.Context) (*podbackend.Running, error) {
	return b.register(ctx)
}

func (b *fakeBackend) WaitPublished(context.Context, time.Duration) bool { return true }

func (b *fakeBackend) State() ipn.State {
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	if b.f.state != 0 {
		return b.f.state
	}
	return ipn.Running
}

func (b *fakeBackend) Relay(netmon.ChangeDelta) { b.mu.Lock(); b.relayed++; b.mu.Unlock() }

func (b *fakeBackend) relays() int { b.mu.Lock(); defer b.mu.Unlock(); return b.relayed }

// Close is the engine closing the TUN and the LocalAPI socket going.
func (b *fakeBackend) Close() {
	b.mu.Lock()
	closed := b.closed
	b.closed = true
	b.mu.Unlock()
	if closed {
		return
	}
	b.mu.Lock()
	sock := b.socket
	b.mu.Unlock()
	if sock != "" {
		os.Remove(sock)
	}
	b.f.net.mu.Lock()
	delete(b.f.net.live, "tun:"+b.cfg.Pod.TUN)
	b.f.net.mu.Unlock()
	b.f.mu.Lock()
	if b.f.live[b.cfg.Pod.TUN] == b {
		delete(b.f.live, b.cfg.Pod.TUN)
	}
	b.f.mu.Unlock()
}
