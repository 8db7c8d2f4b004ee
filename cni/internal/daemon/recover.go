package daemon

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"tailscale.com/types/key"
	"tsymbiote.dhouti.dev/cni/internal/podbackend"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
)

// recoverStarts bounds how many recovered nodes start at once. Starting
// one (its TUN, engine and backend, and its first map request) is CPU
// work: 110 at once on a 2-core node starve each other, the shim's socket
// and the GC. Waiting for a started node to come up takes no slot.
const recoverStarts = 8

// Recover brings back, after a restart (clean or kill -9), every pod whose
// netns still exists, with the node identity in its FileStore (so the same
// node key and addresses), and removes what is left of pods that are gone:
// their nodes, links, rules, tables, state and sockets. It waits up to the
// ADD timeout for recovered nodes to run; slower ones keep coming up in the
// background.
func (m *Manager) Recover(ctx context.Context) (recovered, removed int) {
	start := m.clock.Now()
	entries, _ := os.ReadDir(filepath.Join(m.cfg.StateDir, "pods"))
	var live []*pod
	for _, e := range entries {
		id := e.Name()
		if ValidContainerID(id) != nil {
			continue
		}
		rec, err := m.load(id)
		if err != nil || !rec.Ready || rec.Deleting || !m.netnsExists(rec.NetNS) {
			why := "its netns is gone"
			switch {
			case err != nil:
				why = "its state is unreadable: " + err.Error()
			case rec.Deleting:
				why = "it was deleted while the control plane was unreachable"
			case !rec.Ready:
				why = "its ADD never finished"
			}
			if rec == nil {
				rec = &PodRecord{ContainerID: id}
			}
			m.logf("recover: removing pod %s: %s", id, why)
			p := &pod{rec: *rec, socket: SocketPath(m.cfg.RunDir, rec.Namespace, rec.Pod, id)}
			unlock := m.lock(id)
			if err := m.delete(ctx, p); err != nil {
				m.logf("recover: removing pod %s: %v", id, err)
			}
			unlock()
			removed++
			continue
		}
		p := &pod{rec: *rec, socket: SocketPath(m.cfg.RunDir, rec.Namespace, rec.Pod, id)}
		m.mu.Lock()
		m.pods[id] = p
		m.mu.Unlock()
		if !rec.OptOut {
			live = append(live, p)
		}
	}

	// Recoveries may outlive Recover, but not ctx nor the Manager.
	rctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(m.closing, cancel)
	scanned := m.clock.Now()
	// The pool's leftovers and the sweep of links, rules, tables and
	// sockets no pod owns run beside the recoveries, not before them:
	// every pod that stays is in m.pods already, so the sweep keeps what
	// they use, and at 50 pods on a busy node the two took 2.2 s that
	// every pod waited out.
	swept := make(chan int, 1)
	go func() {
		n := m.recoverPool(ctx)
		k, err := m.net.Sweep(m.logf, m.ownsLink, m.ownsTable)
		if err != nil {
			m.logf("recover: sweep: %v", err)
		}
		m.sweepSockets()
		m.logf("recover: pool leftovers and sweep done in %v", m.clock.Since(scanned).Round(time.Millisecond))
		swept <- n + k
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var times []recoverTimes
	slots := make(chan struct{}, recoverStarts)
	for _, p := range live {
		wg.Add(1)
		m.recovering.Go(func() {
			defer wg.Done()
			t, ok := m.recoverPod(rctx, p, slots)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				recovered++
				times = append(times, t)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		stop()
		cancel()
		close(done)
	}()
	timer, timeout := m.clock.NewTimer(m.cfg.AddTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timeout:
		m.logf("recover: some pods are still coming up after %v", m.cfg.AddTimeout)
	}
	removed += <-swept
	mu.Lock()
	defer mu.Unlock()
	m.logRecovered(times, scanned.Sub(start), m.clock.Since(start))
	return recovered, removed
}

// recoverTimes is where one pod's recovery spent its time.
type recoverTimes struct {
	queued  time.Duration // waiting for a start slot
	started time.Duration // host rules, TUN, engine, backend
	up      time.Duration // until the node has its addresses (or runs)
	wired   time.Duration // ts0 and DNS
}

// logRecovered logs, in one line, where recovery spent its time: the
// scan of the pods' records, then each phase's median and slowest over
// the pods.
func (m *Manager) logRecovered(ts []recoverTimes, scan, total time.Duration) {
	if len(ts) == 0 {
		return
	}
	stat := func(f func(recoverTimes) time.Duration) string {
		ds := make([]time.Duration, len(ts))
		for i, t := range ts {
			ds[i] = f(t)
		}
		slices.Sort(ds)
		r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
		return r(ds[len(ds)/2]).String() + "/" + r(ds[len(ds)-1]).String()
	}
	m.logf("recover: %d pods back in %v (scan %v; median/slowest: queued %s, start %s, up %s, wire %s)",
		len(ts), total.Round(time.Millisecond), scan.Round(time.Millisecond),
		stat(func(t recoverTimes) time.Duration { return t.queued }),
		stat(func(t recoverTimes) time.Duration { return t.started }),
		stat(func(t recoverTimes) time.Duration { return t.up }),
		stat(func(t recoverTimes) time.Duration { return t.wired }))
}

func (m *Manager) netnsExists(path string) bool {
	return path != "" && m.net.CheckNetNS(path) == nil
}

// recoverPod restarts one pod's node from its stored identity and rewires
// it, starting the node once it holds one of slots.
func (m *Manager) recoverPod(ctx context.Context, p *pod, slots chan struct{}) (t recoverTimes, ok bool) {
	id := p.rec.ContainerID
	unlock := m.lock(id)
	defer unlock()
	// Ready is cleared while rewiring so that addrsChanged leaves it alone.
	p.rec.Ready = false
	mark := m.clock.Now()
	lap := func() time.Duration {
		now := m.clock.Now()
		d := now.Sub(mark)
		mark = now
		return d
	}
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return t, false
	}
	t.queued = lap()
	// Wall time, not m.clock: it is compared with WireGuard's handshake
	// times (see retryHandshakesTo).
	restarted := time.Now()
	b, err := m.restartNode(p)
	<-slots
	if err != nil {
		m.logf("recover: pod %s: %v", id, err)
		return t, false
	}
	t.started = lap()
	// As ADD does, wire the pod once its node has its addresses (or, with
	// AddWaitsForRunning, runs). No timeout beyond the daemon's life: a
	// node that cannot reach the control plane now will when it comes
	// back.
	wait := b.WaitAddresses
	if m.cfg.AddWaitsForRunning {
		wait = b.WaitRunning
	}
	run, err := wait(ctx)
	if err != nil {
		m.logf("recover: pod %s: %v", id, err)
		return t, false
	}
	t.up = lap()
	if run.NodeID != p.rec.NodeID {
		m.logf("recover: pod %s came back as node %s, was %s", id, run.NodeID, p.rec.NodeID)
		p.rec.NodeID = run.NodeID
	}
	if !m.stillWired(p, run.Addrs) {
		if err := m.attach(p, run.Addrs); err != nil {
			m.logf("recover: pod %s: %v", id, err)
			return t, false
		}
	}
	if err := m.startDNS(p); err != nil {
		m.logf("recover: pod %s: %v", id, err)
	}
	p.rec.Ready = true
	if err := m.save(&p.rec); err != nil {
		m.logf("recover: pod %s: saving state: %v", id, err)
	}
	t.wired = lap()
	m.logf("recover: pod %s/%s back as %s (%v)", p.rec.Namespace, p.rec.Pod, p.rec.Hostname, p.rec.Addrs)
	m.recovering.Go(func() { m.retryHandshakesTo(b, restarted) })
	return t, true
}

// handshakeRetrier is what retryHandshakesTo needs of a node: the real
// backend's, not the tests' fakes.
type handshakeRetrier interface {
	NodeKey() key.NodePublic
	Handshake(peer key.NodePublic) podbackend.Handshake
	ResetHandshake(peer key.NodePublic)
}

// How retryHandshakesTo paces itself: it first looks retryFirst after the
// node runs (long enough for the node's own first packets to leave), then
// every retryEvery while a look dropped something, for at most retryWait.
const (
	retryFirst = 250 * time.Millisecond
	retryEvery = time.Second
	retryWait  = 5 * time.Second
)

// retryHandshakesTo drops, once b (a node restarted at restarted) runs,
// the WireGuard handshakes between b and this daemon's other nodes that
// were lost (see podbackend's Handshake.Lost), so that the next packet
// starts a new one at once instead of at wireguard-go's retry 5 s later.
// Every node here died with the daemon: a node that came back earlier and
// had packets for b sent its handshake while b was down, and b's own
// first handshakes may have left before its DERP connection was up (a
// rebind right after start closes it too). The other node's lost
// handshake is left alone when b has sent it one of its own: that one
// settles both, where two at once would cross and both wait the 5 s.
// Peers on other nodes are not nudged: they learn of the restart from the
// control plane, or from b's own first handshake. A few key lookups per
// local node and look, cheap next to a start.
func (m *Manager) retryHandshakesTo(b PodBackend, restarted time.Time) {
	r, ok := b.(handshakeRetrier)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), retryWait)
	defer cancel()
	stop := context.AfterFunc(m.closing, cancel)
	defer stop()
	// Best effort: a node that does not run within retryWait is still
	// worth a look, and one that was closed has nothing to nudge.
	if _, err := b.WaitRunning(ctx); err != nil && m.closing.Err() != nil {
		return
	}
	self := r.NodeKey()
	if self.IsZero() {
		return
	}
	wait := retryFirst
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = retryEvery
		m.mu.Lock()
		var others []handshakeRetrier
		for _, q := range m.pods {
			if o, ok := q.backend.(handshakeRetrier); ok && q.backend != b {
				others = append(others, o)
			}
		}
		m.mu.Unlock()
		dropped := 0
		for _, o := range others {
			k := o.NodeKey()
			if k.IsZero() {
				continue
			}
			mine := r.Handshake(k)
			if mine.Lost(restarted) {
				r.ResetHandshake(k)
				dropped++
			}
			if !mine.Sent && o.Handshake(self).Lost(restarted) {
				o.ResetHandshake(self)
				dropped++
			}
		}
		if dropped == 0 {
			return
		}
	}
}

// stillWired reports whether the pod's ts0 and host end are as the last
// daemon left them, with the node's addresses addrs. A daemon that died
// or stopped leaves them (only its TUNs go with it); making them again
// would take the pod's ts0 away for a while and churn every backend's
// view of the host's links (a second per pod at 20 pods on 2 busy cores).
func (m *Manager) stillWired(p *pod, addrs []netip.Prefix) bool {
	want := podnet.HostAddrs(addrs)
	same := samePrefixes(want, p.rec.Addrs) || (!m.cfg.IPv6 && samePrefixes(v4only(want), p.rec.Addrs))
	return same && len(p.rec.Addrs) > 0 && m.net.Check(p.kernel(), p.rec.Addrs) == nil
}

// restartNode installs the pod's host rules and starts its node from the
// identity in its state dir.
func (m *Manager) restartNode(p *pod) (PodBackend, error) {
	if err := m.net.PrepareHost(p.kernel()); err != nil {
		return nil, err
	}
	return m.startBackend(p, "")
}

func (m *Manager) ownsLink(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.pods {
		n := p.kernel().Names
		if n.HostVeth == name || n.TUN == name {
			return true
		}
	}
	return m.poolOwnsLinkLocked(name)
}

func (m *Manager) ownsTable(t int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tableInUseLocked(t)
}

// sweepSockets removes socket dirs no pod serves.
func (m *Manager) sweepSockets() {
	dir := filepath.Join(m.cfg.RunDir, "pods")
	entries, _ := os.ReadDir(dir)
	keep := map[string]bool{}
	m.mu.Lock()
	for _, p := range m.pods {
		keep[filepath.Dir(p.socket)] = true
	}
	m.mu.Unlock()
	for _, e := range entries {
		d := filepath.Join(dir, e.Name())
		if !keep[d] {
			m.logf("sweep: removing leftover socket dir %s", d)
			os.RemoveAll(d)
		}
	}
}

// RetryDeletes deletes, every interval until ctx ends, the nodes of pods
// that DEL tore down while the control plane was unreachable.
func (m *Manager) RetryDeletes(ctx context.Context, interval time.Duration) {
	t, tick := m.clock.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		m.retryDeletes(ctx)
	}
}

// retryDeletes makes one attempt at every node still to delete, in the
// order of their container IDs. Each pod's record goes once its node is
// gone, so no node is deleted twice.
func (m *Manager) retryDeletes(ctx context.Context) {
	entries, _ := os.ReadDir(filepath.Join(m.cfg.StateDir, "pods"))
	for _, e := range entries {
		id := e.Name()
		if ValidContainerID(id) != nil {
			continue
		}
		unlock := m.lock(id)
		live := m.podByID(id) != nil
		if rec, err := m.load(id); !live && err == nil && rec.Deleting {
			p := &pod{rec: *rec, socket: SocketPath(m.cfg.RunDir, rec.Namespace, rec.Pod, id)}
			if err := m.delete(ctx, p); err == nil {
				m.logf("deleted node %s of pod %s, which DEL could not reach the control plane for", rec.NodeID, id)
			}
		}
		unlock()
	}
}
