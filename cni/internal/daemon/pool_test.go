package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"tsymbiote.dhouti.dev/cni/internal/podmeta"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/proto/contract"
)

func init() {
	// The fakes publish at once and have no peers to tell.
	poolSettle = 0
}

// ServeSocket is the pool handing the node to a pod: its LocalAPI socket
// appears at the pod's path.
func (b *fakeBackend) ServeSocket(path string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.socket != "" {
		return errors.New("already serving " + b.socket)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return err
	}
	b.socket = path
	return nil
}

// SetHostname renames the node; the fake control plane answers at once.
func (b *fakeBackend) SetHostname(name string) error {
	b.f.mu.Lock()
	err := b.f.fail["SetHostname"]
	b.f.mu.Unlock()
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.hostname = name
	b.mu.Unlock()
	return nil
}

func (b *fakeBackend) ControlName() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.hostname
	if h == "" {
		h = b.cfg.Hostname
	}
	return h + ".tailnet.test."
}

// startPool restarts the harness's daemon with a pool of size n, recovers
// and waits until the pool is full.
func (h *harness) startPool(n int) {
	h.t.Helper()
	h.cfg.PoolSize = n
	h.restart()
	h.m.Recover(context.Background())
	h.m.StartPool(context.Background())
	h.waitPool(n)
}

func (h *harness) waitPool(ready int) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.m.PoolStatus().Ready != ready {
		if time.Now().After(deadline) {
			h.t.Fatalf("pool: %v, want %d ready", h.m.PoolStatus(), ready)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) poolDirs() []string {
	return entries(h.t, filepath.Join(h.cfg.StateDir, poolDirName))
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPoolAddDel(t *testing.T) {
	h := newHarness(t)
	h.startPool(2)
	pooled := h.cp.liveNodes()
	if len(pooled) != 2 || len(h.poolDirs()) != 2 {
		t.Fatalf("pool of 2: nodes %v, dirs %v", pooled, h.poolDirs())
	}

	a := h.pod("web")
	res := h.add(a)
	if !slices.Contains(pooled, res.NodeID) || res.Hostname != "k8s-default-web" || !slices.Equal(res.Addrs, addrsFor(res.NodeID)) {
		t.Errorf("ADD result = %+v, want a pool node (%v) named k8s-default-web with its addresses", res, pooled)
	}
	rec, err := h.m.load(a.ContainerID)
	if err != nil || !rec.Ready || rec.PoolID == "" || rec.NodeDir != h.m.poolDir(rec.PoolID) || rec.TUN != podnet.NamesFor(rec.PoolID).TUN {
		t.Fatalf("record after a pool ADD = %+v, %v", rec, err)
	}
	if _, err := os.Stat(filepath.Join(rec.NodeDir, poolRecordFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the taken node's pool record is still there: %v", err)
	}
	if _, err := os.Stat(SocketPath(h.cfg.RunDir, a.Namespace, a.Pod, a.ContainerID)); err != nil {
		t.Errorf("pod socket: %v", err)
	}
	if err := h.m.Check(context.Background(), a); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	b := h.be.byTUN(rec.TUN)
	waitUntil(t, "the rename", func() bool { return b.ControlName() == "k8s-default-web.tailnet.test." })
	h.waitPool(2) // refilled
	if got := testutil.ToFloat64(h.m.metrics.poolTakes.WithLabelValues("hit")); got != 1 {
		t.Errorf("pool hits = %v, want 1", got)
	}

	// The sweep and GC leave the pool alone, and the pod's links too.
	before := h.net.liveObjects()
	if _, err := h.m.GC(context.Background(), "", nil); err == nil {
		t.Error("GC without a network name succeeded")
	}
	if n, _ := h.net.Sweep(h.m.logf, h.m.ownsLink, h.m.ownsTable); n != 0 {
		t.Errorf("sweep removed %d objects of the pod and pool (had %v)", n, before)
	}

	h.del(a)
	if _, err := os.Stat(rec.NodeDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("DEL left the node's dir: %v", err)
	}
	if _, deleted := h.cp.counts(res.NodeID); deleted != 1 {
		t.Errorf("the pod's node was deleted %d times, want 1", deleted)
	}

	// A clean stop deletes the pool's nodes and leaves nothing.
	h.cfg.PoolSize = 0
	h.restart()
	h.assertNothingLeft()
	if got := h.poolDirs(); len(got) > 0 {
		t.Errorf("pool dirs left after Close: %v", got)
	}
}

// TestPoolRecoverAfterCrash: a daemon killed with its pool full, with a
// node that was registering and one a pod had just taken, leaves records
// the next daemon uses to delete every untaken node.
func TestPoolRecoverAfterCrash(t *testing.T) {
	for _, size := range []int{2, 0} {
		h := newHarness(t)
		h.startPool(2)
		a := h.pod("web")
		res := h.add(a)
		h.waitPool(2)
		// A node that registered before its record had its ID.
		lost := poolRecord{ID: "pool-00000000aa", Hostname: "k8s-pool-00000000aa", Table: podnet.TableBase + 1}
		if err := h.m.savePool(&lost); err != nil {
			t.Fatal(err)
		}
		h.net.create("rules", podnet.NamesFor(lost.ID).HostVeth)
		// The pod's record was written but the pool's not yet removed.
		rec, _ := h.m.load(a.ContainerID)
		taken := poolRecord{ID: rec.PoolID, Hostname: "k8s-" + rec.PoolID, NodeID: res.NodeID, Table: rec.Table}
		if err := h.m.savePool(&taken); err != nil {
			t.Fatal(err)
		}

		h.crash()
		h.cfg.PoolSize = size
		h.start()
		h.m.Recover(context.Background())
		h.m.StartPool(context.Background())
		h.waitPool(size)
		live := h.cp.liveNodes()
		if len(live) != 1+size || !slices.Contains(live, res.NodeID) {
			t.Errorf("pool %d: nodes after the restart %v, want the pod's %s and %d new", size, live, res.NodeID, size)
		}
		if err := h.m.Check(context.Background(), a); err != nil {
			t.Errorf("pool %d: the pod's CHECK after the restart: %v", size, err)
		}
		if _, err := os.Stat(filepath.Join(rec.NodeDir, poolRecordFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pool %d: the taken node's pool record survived recovery: %v", size, err)
		}
		if h.net.has("rules", podnet.NamesFor(lost.ID).HostVeth) {
			t.Errorf("pool %d: the lost pool node's rules survived recovery", size)
		}
		h.del(a)
		h.cfg.PoolSize = 0
		h.restart()
		h.assertNothingLeft()
		if got := h.poolDirs(); len(got) > 0 {
			t.Errorf("pool %d: pool dirs left: %v", size, got)
		}
	}
}

// crash stops the daemon as SIGKILL would: its processes' TUNs go, its
// records, rules and nodes stay.
func (h *harness) crash() {
	h.m.mu.Lock()
	es := h.m.pool.entries
	h.m.pool.entries = map[string]*poolEntry{}
	h.m.mu.Unlock()
	h.m.stopAll()
	h.m.pool.wg.Wait()
	for _, e := range es {
		e.backend.Close()
	}
	h.m.Close()
}

// listCP is the fake control plane that can also list its nodes, as
// recoverPool does for a pool node whose ID it never learnt.
type listCP struct{ *fakeCP }

func (c listCP) ListDevices(context.Context, controlplane.ListOptions) ([]controlplane.Device, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []controlplane.Device
	for id := range c.nodes {
		out = append(out, controlplane.Device{ID: id, Hostname: "host-of-" + id})
	}
	return out, nil
}

func TestPoolRecoverFindsNodeByHostname(t *testing.T) {
	h := newHarness(t)
	h.ctrl = listCP{h.cp}
	h.cp.register("n7")
	h.cp.register("n8")
	rec := poolRecord{ID: "pool-0000000007", Hostname: "host-of-n7", Table: podnet.TableBase + 3}
	if err := h.m.savePool(&rec); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if _, removed := h.m.Recover(context.Background()); removed != 1 {
		t.Errorf("Recover removed %d, want the pool node", removed)
	}
	if got := h.cp.liveNodes(); !slices.Equal(got, []string{"n8"}) {
		t.Errorf("nodes = %v, want only n8", got)
	}
	if got := h.poolDirs(); len(got) > 0 {
		t.Errorf("pool dirs left: %v", got)
	}
}

func TestPoolSlowPath(t *testing.T) {
	h, cp := newPodsHarness(t, map[string]map[string]string{
		"default/web":   {contract.AnnotationTags: "tag:web"},
		"default/named": {contract.AnnotationHostname: "named-1"},
	})
	h.startPool(1)
	keys := len(cp.tags)
	web := h.add(h.pod("web"))
	if len(cp.tags) != keys+1 || !slices.Equal(cp.tags[keys], []string{"tag:web"}) {
		t.Errorf("a pod with its own tags minted %v, want one key with tag:web", cp.tags[keys:])
	}
	if got := testutil.ToFloat64(h.m.metrics.poolTakes.WithLabelValues("miss_tags")); got != 1 {
		t.Errorf("miss_tags = %v, want 1", got)
	}
	if h.m.PoolStatus().Ready != 1 {
		t.Errorf("the slow path took from the pool: %v", h.m.PoolStatus())
	}
	named := h.pod("named")
	res := h.add(named)
	if res.Hostname != "named-1" || res.NodeID == web.NodeID {
		t.Errorf("pod with a hostname annotation: %+v", res)
	}
	rec, _ := h.m.load(named.ContainerID)
	if rec.PoolID == "" {
		t.Error("a pod with the default tags and its own hostname did not take a pool node")
	}
	// The pool is empty until the refill: the next pod takes the slow path.
	h.waitPool(1) // no refill in flight to turn ready below
	h.m.mu.Lock()
	for _, e := range h.m.pool.entries {
		e.ready = false
	}
	h.m.mu.Unlock()
	other := h.pod("other")
	h.add(other)
	if rec, _ := h.m.load(other.ContainerID); rec.PoolID != "" {
		t.Errorf("ADD took a pool node that was not ready: %+v", rec)
	}
	if got := testutil.ToFloat64(h.m.metrics.poolTakes.WithLabelValues("miss_empty")); got < 1 {
		t.Errorf("miss_empty = %v, want at least 1", got)
	}
}

func TestPoolRenameRetries(t *testing.T) {
	h := newHarness(t)
	h.startPool(1)
	h.be.setFail("SetHostname", errors.New("backend is shutting down"))
	a := h.pod("web")
	h.add(a)
	waitUntil(t, "a failed rename", func() bool { return testutil.ToFloat64(h.m.metrics.poolRenameErrors) >= 1 })
	h.be.setFail("SetHostname", nil)
	rec, _ := h.m.load(a.ContainerID)
	b := h.be.byTUN(rec.TUN)
	for b.ControlName() != "k8s-default-web.tailnet.test." {
		h.clock.Advance(time.Second)
		time.Sleep(5 * time.Millisecond)
	}
	if err := h.m.Check(context.Background(), a); err != nil {
		t.Errorf("a pod whose rename failed: %v", err)
	}
}

func TestPoolServes(t *testing.T) {
	m := &Manager{cfg: Config{PoolSize: 2, Tags: []string{"tag:b", "tag:a"}}}
	for _, tc := range []struct {
		tags []string
		want bool
	}{
		{nil, true},
		{[]string{"tag:a", "tag:b"}, true},
		{[]string{"tag:b", "tag:a", "tag:a"}, true},
		{[]string{"tag:a"}, false},
		{[]string{"tag:a", "tag:b", "tag:c"}, false},
	} {
		if got, _ := m.poolServes(podmeta.Options{Tags: tc.tags}); got != tc.want {
			t.Errorf("poolServes(%v) = %v, want %v", tc.tags, got, tc.want)
		}
	}
	m.cfg.PoolSize = 0
	if ok, why := m.poolServes(podmeta.Options{}); ok || why != "off" {
		t.Errorf("a pool of 0 serves: %v %q", ok, why)
	}
}

func TestNameMatches(t *testing.T) {
	for _, tc := range []struct {
		fqdn, host string
		want       bool
	}{
		{"web.tailnet.test.", "web", true},
		{"web-1.tailnet.test.", "web", true},
		{"web-12.tailnet.test.", "web", true},
		{"web-x.tailnet.test.", "web", false},
		{"web-.tailnet.test.", "web", false},
		{"k8s-pool-0011.tailnet.test.", "web", false},
		{"", "web", false},
	} {
		if got := nameMatches(tc.fqdn, tc.host); got != tc.want {
			t.Errorf("nameMatches(%q, %q) = %v, want %v", tc.fqdn, tc.host, got, tc.want)
		}
	}
}

func TestLoadRefusesForeignNodeDir(t *testing.T) {
	h := newHarness(t)
	a := h.pod("web")
	rec := PodRecord{ContainerID: a.ContainerID, NetNS: a.NetNS, NodeDir: "/etc"}
	if err := h.m.save(&rec); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.load(a.ContainerID); err == nil || !strings.Contains(err.Error(), "/etc") {
		t.Errorf("load of a record naming /etc as node dir: %v", err)
	}
}
