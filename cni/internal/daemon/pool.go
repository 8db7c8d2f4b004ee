package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"tailscale.com/ipn"
	"tsymbiote.dhouti.dev/cni/internal/cnierr"
	"tsymbiote.dhouti.dev/cni/internal/podbackend"
	"tsymbiote.dhouti.dev/cni/internal/podmeta"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
	"tsymbiote.dhouti.dev/controlplane"
)

// The pool: nodes the daemon registers, starts and publishes before any
// pod asks, with the daemon's default tags. ADD of a pod with those tags
// takes a ready one and only wires it into the pod (veth, routes, DNS,
// LocalAPI socket): registration, the first netmap and the control
// plane's batching (Headscale's 500 ms node-store writes and 800 ms peer
// updates) are paid ahead, and the node's peers already hold its keys,
// addresses and endpoints, so it is reachable at once. The node is renamed
// to the pod's hostname just after ADD returns. Pods with other tags, and
// ADDs that find the pool empty and no node due sooner than the slow path
// would take, take the slow path (add.go). How the pool follows bursts
// (refills in parallel, grows while ADDs find it empty, hands nodes to
// waiting ADDs) is in pool_grow.go.
//
// Every pool node has a record on disk, written before it registers, in
// StateDir/pool/<pool ID> beside its FileStore; a taken node keeps that
// dir (its pod's record names it), so that recovery restarts it with its
// identity like any pod. Close deletes the untaken nodes from the control
// plane; a daemon that died without Close deletes them at its next start
// (recoverPool).

const (
	poolDirName    = "pool"
	poolRecordFile = "pool.json"
	// poolPublishWait bounds how long a new pool node waits for the
	// control plane to hold its endpoints before it counts as ready.
	poolPublishWait = 10 * time.Second
	// poolBackoffMax caps the wait between failed refills.
	poolBackoffMax = time.Minute
	// poolDeleteTimeout bounds deleting one pool node at shutdown.
	poolDeleteTimeout = 5 * time.Second
	// renameWait is how long a rename waits for the control plane to send
	// the new name back before it tries again.
	renameWait = 30 * time.Second
)

// poolSettle is how long a pool node waits, once the control plane holds
// its endpoints, before ADD may take it: the time for the control plane to
// tell every peer (Headscale batches peer updates for 800 ms by default).
// A variable so that tests over fakes need not wait.
var poolSettle = 1500 * time.Millisecond

// poolRecord is what the daemon persists about a pool node (pool.json).
type poolRecord struct {
	ID       string         `json:"id"`
	Hostname string         `json:"hostname"`
	Table    int            `json:"table"`
	NodeID   string         `json:"nodeID,omitempty"`
	Addrs    []netip.Prefix `json:"addrs,omitempty"`
	Created  time.Time      `json:"created"`
}

// poolEntry is one pool node. Its fields are guarded by Manager.mu.
type poolEntry struct {
	rec     poolRecord
	backend PodBackend
	ready   bool   // running, published and settled: its peers know it, ADD may take it
	owner   string // container ID of the pod that took it
	// releasing: the node is being deleted; it keeps its table and links
	// (in pool.entries) until they are gone, but no ADD takes it and it
	// counts for nothing.
	releasing bool
}

func (e *poolEntry) kernel() podnet.Pod {
	return podnet.Pod{Names: podnet.NamesFor(e.rec.ID), Table: e.rec.Table}
}

// pool is the Manager's pool state.
type pool struct {
	tune PoolTuning     // with defaults; read-only after initPool
	kick chan struct{}  // a take asks the filler for another node
	wg   sync.WaitGroup // the filler, its fills, renames and releases

	// Guarded by Manager.mu.
	entries  map[string]*poolEntry // untaken nodes by pool ID, starting, ready or releasing
	target   int                   // nodes wanted now: PoolSize, more while ADDs find the pool empty
	lastTake time.Time             // the last ADD the pool could serve, taken or not
	waiters  []*poolWaiter         // ADDs waiting for the next node to publish, first come first served
	pubEst   time.Duration         // moving average of a pool node's start to published (the slow path's work)
}

func (m *Manager) initPool() {
	m.pool.entries = map[string]*poolEntry{}
	m.pool.kick = make(chan struct{}, 1)
	m.pool.tune = m.cfg.PoolTuning.withDefaults(m.cfg.PoolSize)
	m.pool.target = m.cfg.PoolSize
	m.metrics.poolFunc = m.PoolStatus
}

// PoolStatus reports the pool's configured size and its nodes by state.
type PoolStatus struct {
	Size, Ready, Starting int
	// Target is how many nodes the pool wants now: Size, more while ADDs
	// find it empty, up to Max.
	Target, Max int
	// Waiting is how many ADDs wait for a pool node to publish.
	Waiting int
}

func (s PoolStatus) String() string {
	if s.Size == 0 {
		return "pool off"
	}
	out := fmt.Sprintf("pool %d/%d ready (%d starting)", s.Ready, s.Size, s.Starting)
	if s.Target > s.Size {
		out += fmt.Sprintf("; grown to %d of at most %d", s.Target, s.Max)
	}
	if s.Waiting > 0 {
		out += fmt.Sprintf("; %d ADDs waiting", s.Waiting)
	}
	return out
}

// PoolStatus reports the pool's figures now.
func (m *Manager) PoolStatus() PoolStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := PoolStatus{Size: m.cfg.PoolSize, Target: m.pool.target, Max: m.pool.tune.Max, Waiting: len(m.pool.waiters)}
	if st.Size == 0 {
		st.Target, st.Max = 0, 0
	}
	for _, e := range m.pool.entries {
		switch {
		case e.releasing:
		case e.ready:
			st.Ready++
		default:
			st.Starting++
		}
	}
	return st
}

func (m *Manager) poolDir(id string) string {
	return filepath.Join(m.cfg.StateDir, poolDirName, id)
}

func newPoolID() string {
	b := make([]byte, 5)
	rand.Read(b)
	return "pool-" + hex.EncodeToString(b)
}

// newPoolEntryLocked reserves a new pool node's ID and routing table: it
// is in the pool (starting) from now on. The caller holds mu.
func (m *Manager) newPoolEntryLocked() (*poolEntry, error) {
	id := newPoolID()
	e := &poolEntry{rec: poolRecord{
		ID:       id,
		Hostname: dnsLabel(m.cfg.ClusterName + "-" + id),
		Created:  m.clock.Now().UTC(),
	}}
	t, err := podnet.PickTable(id, m.tableInUseLocked)
	if err != nil {
		return nil, err
	}
	e.rec.Table = t
	m.pool.entries[id] = e
	return e, nil
}

// fillOne registers and starts the pool node e (newPoolEntryLocked) and
// waits until its peers know it, unless an ADD waiting for it takes it
// once it is ready. On failure it deletes whatever it made.
func (m *Manager) fillOne(ctx context.Context, e *poolEntry) (err error) {
	id := e.rec.ID
	start := m.clock.Now()
	defer func() {
		if err == nil {
			return
		}
		m.mu.Lock()
		taken := e.owner != ""
		m.mu.Unlock()
		if taken {
			err = nil // the pod's now, whatever the settling did
			return
		}
		m.removePoolEntry(context.WithoutCancel(ctx), e)
	}()
	// On disk before the node exists, so that a daemon that dies from
	// here on finds it and deletes it.
	if err := m.savePool(&e.rec); err != nil {
		return fmt.Errorf("saving pool record: %w", err)
	}
	if err := m.net.PrepareHost(e.kernel()); err != nil {
		return fmt.Errorf("setting up policy routing: %w", err)
	}
	key, err := m.cp.CreateAuthKey(ctx, controlplane.AuthKeyRequest{
		Tags: m.cfg.Tags, Ephemeral: m.cfg.Ephemeral, Preauthorized: true,
		Expiry: m.cfg.AuthKeyTTL, Description: "tailscale-cni pool " + e.rec.Hostname,
	})
	if err != nil {
		return fmt.Errorf("minting an auth key: %w", err)
	}
	// Each fill releases first, for the reason startBackend gives; fills
	// that run at once share a release (memRelease coalesces them). One
	// release per batch of fills left a 110-pod node at 12.8 MiB of
	// anonymous memory per pod, against 5.6 with one per start.
	memRelease.release()
	b, err := m.start(m.poolLogf(id), podbackend.Config{
		Pod:        e.kernel(),
		Hostname:   e.rec.Hostname,
		ControlURL: m.cp.ControlURL(),
		AuthKey:    key.Key.Reveal(),
		StateDir:   m.poolDir(id),
		NetMon:     m.netMon,
		OnAddrs:    func(addrs []netip.Prefix) { m.poolAddrsChanged(e, addrs) },
		MagicDNS:   m.dns != nil || m.cfg.Netstack,
		Netstack:   m.cfg.Netstack,
	})
	if err != nil {
		return fmt.Errorf("starting the node: %w", err)
	}
	m.mu.Lock()
	e.backend = b
	m.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, m.cfg.AddTimeout)
	defer cancel()
	run, err := b.WaitRunning(wctx)
	if err != nil {
		return fmt.Errorf("node %s: %w", e.rec.Hostname, err)
	}
	m.mu.Lock()
	e.rec.NodeID = run.NodeID
	e.rec.Addrs = podnet.HostAddrs(run.Addrs)
	rec := e.rec
	m.mu.Unlock()
	if err := m.savePool(&rec); err != nil {
		return fmt.Errorf("saving pool record: %w", err)
	}
	if !b.WaitPublished(wctx, poolPublishWait) {
		m.logf("pool: node %s: the control plane does not hold its endpoints after %v; using it anyway", e.rec.Hostname, poolPublishWait)
	}
	m.mu.Lock()
	m.notePublishedLocked(m.clock.Since(start))
	m.mu.Unlock()
	if poolSettle > 0 {
		t, c := m.clock.NewTimer(poolSettle)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-c:
		}
	}
	m.mu.Lock()
	if m.pool.entries[id] != e || e.owner != "" || e.releasing {
		// Taken (or released) while it settled.
		m.mu.Unlock()
		return nil
	}
	e.ready = true
	w := m.handToWaiterLocked(e)
	m.mu.Unlock()
	to := ""
	if w != nil {
		to = ", to a waiting ADD"
	}
	m.logf("pool: node %s (%s, %v) ready in %v%s", e.rec.Hostname, run.NodeID, rec.Addrs, m.clock.Since(start).Round(time.Millisecond), to)
	return nil
}

// poolAddrsChanged follows a pool node whose addresses the control plane
// changed: the pod that took it, or the entry until one does.
func (m *Manager) poolAddrsChanged(e *poolEntry, addrs []netip.Prefix) {
	m.mu.Lock()
	owner := e.owner
	if owner == "" && e.rec.NodeID != "" {
		e.rec.Addrs = podnet.HostAddrs(addrs)
	}
	m.mu.Unlock()
	if owner != "" {
		m.addrsChanged(owner, addrs)
	}
}

// poolServes reports whether the pool may serve a pod with opts: only pods
// whose tags are the daemon's (pool nodes registered with those).
func (m *Manager) poolServes(opts podmeta.Options) (bool, string) {
	if m.cfg.PoolSize <= 0 {
		return false, "off"
	}
	if len(opts.Tags) == 0 {
		return true, ""
	}
	a, b := slices.Clone(opts.Tags), slices.Clone(m.cfg.Tags)
	slices.Sort(a)
	slices.Sort(b)
	if slices.Equal(slices.Compact(a), slices.Compact(b)) {
		return true, ""
	}
	return false, "tags"
}

// takeFromPool hands a pool node to the attachment's pod: a ready one
// (its peers know it), else, when a starting node is due sooner than the
// slow path would take, the next one to be ready (awaitPoolNode). It
// returns nil when the pool cannot serve the pod.
func (m *Manager) takeFromPool(a Attachment, opts podmeta.Options) *pod {
	ok, why := m.poolServes(opts)
	if !ok {
		if why != "off" {
			m.metrics.poolTakes.WithLabelValues("miss_" + why).Inc()
		}
		return nil
	}
	p := &pod{rec: m.newRecord(a, opts), socket: SocketPath(m.cfg.RunDir, a.Namespace, a.Pod, a.ContainerID)}
	m.mu.Lock()
	m.pool.lastTake = m.clock.Now()
	var e *poolEntry
	for _, c := range m.pool.entries {
		if c.ready && !c.releasing && c.backend != nil && c.backend.State() == ipn.Running && (e == nil || c.rec.Created.Before(e.rec.Created)) {
			e = c
		}
	}
	if e != nil {
		m.takeEntryLocked(e, p)
		m.mu.Unlock()
		m.metrics.poolTakes.WithLabelValues("hit").Inc()
		m.kickPool()
		return p
	}
	m.growLocked()
	w := m.newWaiterLocked(p)
	m.mu.Unlock()
	m.kickPool()
	if w != nil && m.awaitPoolNode(w) {
		m.metrics.poolTakes.WithLabelValues("hit").Inc()
		m.kickPool()
		return p
	}
	m.metrics.poolTakes.WithLabelValues("miss_empty").Inc()
	return nil
}

// takeEntryLocked moves the pool node e to the pod p: in one critical
// section it leaves the pool and the pod (with the node's table) joins
// m.pods, so that no refill or sweep sees its table or links free. The
// caller holds mu.
func (m *Manager) takeEntryLocked(e *poolEntry, p *pod) {
	delete(m.pool.entries, e.rec.ID)
	e.owner = p.rec.ContainerID
	n := e.kernel().Names
	p.rec.Table, p.rec.NodeID, p.rec.PoolID = e.rec.Table, e.rec.NodeID, e.rec.ID
	p.rec.NodeDir, p.rec.HostVeth, p.rec.TUN = m.poolDir(e.rec.ID), n.HostVeth, n.TUN
	p.rec.Addrs = slices.Clone(e.rec.Addrs)
	p.backend = e.backend
	m.pods[p.rec.ContainerID] = p
}

func (m *Manager) kickPool() {
	select {
	case m.pool.kick <- struct{}{}:
	default:
	}
}

// addFromPool finishes an ADD whose pod took a pool node: the node runs,
// so only the pod's side is left. The rename to the pod's hostname starts
// once ADD is done.
func (m *Manager) addFromPool(ctx context.Context, p *pod, tl addTimeline) (_ *Result, err error) {
	defer func() {
		if err != nil {
			m.undoAdd(ctx, p)
		}
	}()
	addrs := p.rec.Addrs
	p.rec.Addrs = nil
	// The pod's record first (a daemon that dies from here on removes the
	// pod, node and dir with it, since it is not Ready), then the pool's
	// record goes: the node is the pod's now.
	if err := m.save(&p.rec); err != nil {
		return nil, cnierr.New(cnierr.IOFailure, "saving pod state", err)
	}
	if err := os.Remove(filepath.Join(p.rec.NodeDir, poolRecordFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, cnierr.New(cnierr.IOFailure, "removing the pool record of the pod's node", err)
	}
	tl.prepared, tl.minted, tl.started, tl.registered, tl.published = tl.start, tl.start, tl.start, tl.start, m.clock.Now()
	if err := p.backend.ServeSocket(p.socket); err != nil {
		return nil, cnierr.New(cnierr.Internal, "serving the pod's LocalAPI", err)
	}
	if err := m.wire(p, addrs); err != nil {
		return nil, err
	}
	if err := m.startDNS(p); err != nil {
		return nil, err
	}
	m.logUp(p, tl, true)
	res, err := m.result(p)
	if err != nil {
		return nil, err
	}
	b, id, name := p.backend, p.rec.ContainerID, p.rec.Hostname
	m.pool.wg.Go(func() { m.rename(id, b, name) })
	return res, nil
}

// rename gives a pod's pool node the pod's hostname, and tries again with
// backoff until the control plane sends the new name back, the pod goes or
// the Manager closes. A failure never fails the pod: it works by its
// addresses all along, only its name lags.
func (m *Manager) rename(id string, b PodBackend, name string) {
	start := m.clock.Now()
	backoff := time.Second
	for {
		if p := m.podByID(id); p == nil || p.backend != b {
			return
		}
		err := b.SetHostname(name)
		if err == nil && m.waitName(b, name) {
			m.logf("pod %s: node renamed to %s (%s) in %v", id, name, b.ControlName(), m.clock.Since(start).Round(time.Millisecond))
			return
		}
		if err == nil {
			err = fmt.Errorf("control plane still names it %q after %v", b.ControlName(), renameWait)
		}
		m.metrics.poolRenameErrors.Inc()
		m.logf("pod %s: renaming its node to %s: %v; next try in %v", id, name, err, backoff)
		t, c := m.clock.NewTimer(backoff)
		select {
		case <-m.closing.Done():
			t.Stop()
			return
		case <-c:
		}
		backoff = min(2*backoff, poolBackoffMax)
	}
}

// waitName waits up to renameWait for the control plane to name the node
// name (or name-N, a control plane's answer to a name already taken).
func (m *Manager) waitName(b PodBackend, name string) bool {
	deadline := m.clock.Now().Add(renameWait)
	for {
		if nameMatches(b.ControlName(), name) {
			return true
		}
		if m.clock.Now().After(deadline) {
			return false
		}
		t, c := m.clock.NewTimer(50 * time.Millisecond)
		select {
		case <-m.closing.Done():
			t.Stop()
			return false
		case <-c:
		}
	}
}

// nameMatches reports whether a node's MagicDNS name (label.domain.) is
// for hostname: its first label is hostname, maybe with a "-N" bump.
func nameMatches(fqdn, hostname string) bool {
	label, _, _ := strings.Cut(fqdn, ".")
	if label == hostname {
		return true
	}
	rest, ok := strings.CutPrefix(label, hostname+"-")
	if !ok || rest == "" {
		return false
	}
	for _, r := range rest {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// removePoolEntry deletes a pool node that is no pod's: the backend, the
// node in the control plane, its links, rules and table, and its dir
// (kept, with its record, when the control plane could not be reached, so
// that the next start deletes the node).
//
// The entry stays in pool.entries, releasing, until its links and table
// are gone, so that no new node or pod picks its table meanwhile.
func (m *Manager) removePoolEntry(ctx context.Context, e *poolEntry) bool {
	m.mu.Lock()
	b := e.backend
	e.releasing = true
	rec := e.rec
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.pool.entries[rec.ID] == e {
			delete(m.pool.entries, rec.ID)
		}
		m.mu.Unlock()
	}()
	if b != nil {
		b.Close()
	}
	gone := m.deletePoolNode(ctx, &rec)
	if err := m.net.Teardown(e.kernel()); err != nil {
		m.logf("pool: node %s: removing links and rules: %v", rec.Hostname, err)
	}
	if gone {
		if err := os.RemoveAll(m.poolDir(rec.ID)); err != nil {
			m.logf("pool: node %s: %v", rec.Hostname, err)
		}
	}
	return gone
}

// deletePoolNode deletes a pool node from the control plane and reports
// whether it is gone. A record without a node ID is a daemon that died
// while the node registered: the node, if it got that far, is found by its
// hostname, which names no other node.
func (m *Manager) deletePoolNode(ctx context.Context, rec *poolRecord) bool {
	ctx, cancel := context.WithTimeout(ctx, poolDeleteTimeout)
	defer cancel()
	ids := []string{rec.NodeID}
	if rec.NodeID == "" {
		ids = nil
		dl, ok := m.cp.(deviceLister)
		if !ok {
			return true // nothing to go by; an ephemeral node expires on its own
		}
		devs, err := dl.ListDevices(ctx, controlplane.ListOptions{})
		if err != nil {
			m.logf("pool: looking for node %s: %v", rec.Hostname, err)
			return false
		}
		for _, d := range devs {
			if d.Hostname == rec.Hostname || strings.HasPrefix(d.Name, rec.Hostname+".") || d.Name == rec.Hostname {
				ids = append(ids, d.ID)
			}
		}
	}
	gone := true
	for _, id := range ids {
		if err := m.cp.DeleteDevice(ctx, id); err != nil && !errors.Is(err, controlplane.ErrNotFound) {
			m.logf("pool: deleting node %s (%s): %v", rec.Hostname, id, err)
			gone = false
		}
	}
	return gone
}

// closePool stops the filler and the renames, and deletes every untaken
// pool node: they are cheap to make again, and a node nobody runs would
// only sit in every peer's netmap.
func (m *Manager) closePool() {
	m.pool.wg.Wait()
	m.mu.Lock()
	var es []*poolEntry
	for _, e := range m.pool.entries {
		if !e.releasing {
			es = append(es, e)
		}
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range es {
		wg.Go(func() {
			if m.removePoolEntry(context.Background(), e) {
				m.logf("pool: deleted node %s", e.rec.Hostname)
			}
		})
	}
	wg.Wait()
}

// recoverPool deletes the pool nodes a daemon that died left (their
// records), after Recover has loaded the pods: a pool dir a live pod's
// record names is that pod's node. It returns how many nodes it removed.
func (m *Manager) recoverPool(ctx context.Context) int {
	dir := filepath.Join(m.cfg.StateDir, poolDirName)
	entries, _ := os.ReadDir(dir)
	owned := map[string]bool{}
	m.mu.Lock()
	for _, p := range m.pods {
		if p.rec.NodeDir != "" {
			owned[p.rec.NodeDir] = true
		}
	}
	m.mu.Unlock()
	removed := 0
	for _, de := range entries {
		d := filepath.Join(dir, de.Name())
		if owned[d] {
			// Taken just before the daemon died: the pod's now.
			os.Remove(filepath.Join(d, poolRecordFile))
			continue
		}
		rec, err := loadPoolRecord(d)
		if err != nil {
			m.logf("recover: removing pool dir %s: %v", d, err)
			os.RemoveAll(d)
			continue
		}
		m.logf("recover: deleting pool node %s (%s) of an earlier daemon", rec.Hostname, rec.NodeID)
		if m.removePoolEntry(ctx, &poolEntry{rec: *rec}) {
			removed++
		}
	}
	return removed
}

func (m *Manager) savePool(rec *poolRecord) error {
	dir := m.poolDir(rec.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, poolRecordFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, poolRecordFile))
}

// loadPoolRecord reads the pool record in dir, which must name dir.
func loadPoolRecord(dir string) (*poolRecord, error) {
	data, err := os.ReadFile(filepath.Join(dir, poolRecordFile))
	if err != nil {
		return nil, err
	}
	var rec poolRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", poolRecordFile, err)
	}
	if rec.ID != filepath.Base(dir) || !strings.HasPrefix(rec.ID, "pool-") {
		return nil, fmt.Errorf("%s names pool node %q, not %q", poolRecordFile, rec.ID, filepath.Base(dir))
	}
	return &rec, nil
}

func (m *Manager) poolLogf(id string) func(string, ...any) {
	return m.podLogf(&PodRecord{ContainerID: id})
}

// poolOwnsLinkLocked reports whether a link is a pool node's. The caller
// holds mu.
func (m *Manager) poolOwnsLinkLocked(name string) bool {
	for _, e := range m.pool.entries {
		n := e.kernel().Names
		if n.HostVeth == name || n.TUN == name {
			return true
		}
	}
	return false
}
