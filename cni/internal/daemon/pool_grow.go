package daemon

import (
	"context"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// How the pool follows a burst of ADDs (kubelet starting a Deployment's
// pods at once), beyond the pool of PoolSize nodes that serves pods started
// one at a time:
//
//   - the filler starts up to PoolTuning.Parallel nodes at once: a node's
//     start-up is mostly waiting for the control plane's batches, so they
//     overlap;
//   - every ADD that finds no node to take raises the pool's target by one,
//     up to PoolTuning.Max, so that the rest of the burst finds nodes
//     already on their way; after PoolTuning.Idle without an ADD the target
//     goes back to PoolSize and the nodes beyond it are deleted;
//   - an ADD that finds no node to take waits for the next one to be ready
//     when that one is due sooner than the slow path would take (the slow
//     path does what a pool node does up to published: the pool nodes'
//     start-to-published time, a moving average, estimates it; a node is
//     due that plus poolSettle after its start). It gets the node settled,
//     as any pool hit: handing it over once published, before its peers
//     heard of it, left pods unreachable for a WireGuard retry (5 s) in
//     the benchmark. Waiters are served first come first served, each
//     counting on its own starting node; a waiter whose node is late takes
//     the slow path once the slow path's time has passed, so that a wait
//     never costs more than twice the slow path and never outlives the
//     ADD timeout.

// poolPublishGuess is the slow path's time before any pool node has
// published to measure it: about what Headscale's default batching makes
// it (cni/README.md).
const poolPublishGuess = 4 * time.Second

// poolFreeMemory collects and hands free pages back once a shrinking
// pool's nodes are closed. A variable for tests.
var poolFreeMemory = debug.FreeOSMemory

// poolWaiter is an ADD waiting for the next pool node to be ready. The node
// is handed to it (takeEntryLocked) under mu, and then done closes.
type poolWaiter struct {
	p        *pod
	done     chan struct{}
	since    time.Time
	deadline time.Time
}

// StartPool fills the pool in the background until ctx ends or the
// Manager closes. Call it once, after Recover.
func (m *Manager) StartPool(ctx context.Context) {
	if m.cfg.PoolSize <= 0 {
		return
	}
	m.pool.wg.Go(func() { m.fillPool(ctx) })
}

// fillPool keeps the pool at its target: it starts nodes, up to
// PoolTuning.Parallel at once, with backoff on failures, and shrinks the
// pool back once it has been idle. It alone starts pool nodes.
func (m *Manager) fillPool(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(m.closing, cancel)
	// Room for every fill's result, so that none blocks on its send once
	// this loop has returned.
	done := make(chan error, m.pool.tune.Parallel)
	var fills sync.WaitGroup
	filling := 0
	defer func() {
		cancel()
		stop()
		fills.Wait()
	}()
	backoff := time.Second
	var retryAt time.Time
	for {
		now := m.clock.Now()
		var batch []*poolEntry
		for filling+len(batch) < m.pool.tune.Parallel && !now.Before(retryAt) {
			e, err := m.nextPoolEntry()
			if err != nil {
				m.metrics.poolRefillErrors.Inc()
				m.logf("pool: starting a node: %v; next try in %v", err, backoff)
				retryAt, backoff = now.Add(backoff), min(2*backoff, poolBackoffMax)
				break
			}
			if e == nil {
				break
			}
			batch = append(batch, e)
		}
		for _, e := range batch {
			filling++
			fills.Go(func() { done <- m.fillOne(ctx, e) })
		}
		wake := m.shrinkIdle(now)
		if retryAt.After(now) && (wake.IsZero() || retryAt.Before(wake)) {
			wake = retryAt
		}
		var timer <-chan time.Time
		var t interface{ Stop() bool }
		if !wake.IsZero() {
			t, timer = m.clock.NewTimer(wake.Sub(now))
		}
		select {
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			return
		case <-m.pool.kick:
		case <-timer:
		case err := <-done:
			filling--
			switch {
			case err == nil:
				backoff = time.Second
			case ctx.Err() != nil:
			default:
				m.metrics.poolRefillErrors.Inc()
				m.logf("pool: starting a node: %v; next try in %v", err, backoff)
				retryAt, backoff = m.clock.Now().Add(backoff), min(2*backoff, poolBackoffMax)
			}
		}
		if t != nil {
			t.Stop()
		}
	}
}

// nextPoolEntry reserves the next node to start, or returns nil when the
// pool holds its target.
func (m *Manager) nextPoolEntry() (*poolEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.poolCountLocked() >= m.pool.target {
		return nil, nil
	}
	return m.newPoolEntryLocked()
}

// poolCountLocked is how many nodes the pool holds, starting or ready.
func (m *Manager) poolCountLocked() int {
	n := 0
	for _, e := range m.pool.entries {
		if !e.releasing {
			n++
		}
	}
	return n
}

// growLocked raises the pool's target for an ADD that found no node to
// take. The caller holds mu.
func (m *Manager) growLocked() {
	if m.pool.target < m.pool.tune.Max {
		m.pool.target++
	}
}

// shrinkIdle brings a grown pool back to its size once no ADD came for
// PoolTuning.Idle, and deletes the newest ready nodes beyond the target
// (nodes still starting go once ready: the filler calls again when a fill
// ends). It returns when to look again, or zero.
func (m *Manager) shrinkIdle(now time.Time) time.Time {
	m.mu.Lock()
	var again time.Time
	if m.pool.target > m.cfg.PoolSize {
		if at := m.pool.lastTake.Add(m.pool.tune.Idle); now.Before(at) {
			again = at
		} else {
			m.pool.target = m.cfg.PoolSize
		}
	}
	var extra []*poolEntry
	if n := m.poolCountLocked() - m.pool.target; n > 0 {
		for _, e := range m.pool.entries {
			if e.ready && !e.releasing {
				extra = append(extra, e)
			}
		}
		slices.SortFunc(extra, func(a, b *poolEntry) int { return b.rec.Created.Compare(a.rec.Created) })
		extra = extra[:min(len(extra), n)]
	}
	for _, e := range extra {
		e.releasing = true
	}
	m.mu.Unlock()
	if len(extra) > 0 {
		m.pool.wg.Go(func() { m.releaseIdle(extra) })
	}
	return again
}

// releaseIdle deletes the nodes a shrinking pool no longer wants, then
// hands their memory back at once: closing nodes frees megabytes without
// allocating, and a periodic release that waits for allocation (as the
// daemon's did for a while) left them resident: the node benchmark read
// 13 MiB per pod at 40 pods instead of 3.
func (m *Manager) releaseIdle(es []*poolEntry) {
	var wg sync.WaitGroup
	for _, e := range es {
		m.metrics.poolReleased.Inc()
		wg.Go(func() {
			if m.removePoolEntry(context.WithoutCancel(m.closing), e) {
				m.logf("pool: no ADD for %v: deleted node %s", m.pool.tune.Idle, e.rec.Hostname)
			}
		})
	}
	wg.Wait()
	poolFreeMemory()
}

// notePublishedLocked adds a pool node's start-to-published time to the
// moving average that estimates the slow path. The caller holds mu.
func (m *Manager) notePublishedLocked(d time.Duration) {
	if m.pool.pubEst == 0 {
		m.pool.pubEst = d
		return
	}
	m.pool.pubEst += (d - m.pool.pubEst) / 4
}

// slowPathLocked estimates how long the slow path would take now: what a
// pool node takes from its start to published, the same steps. The caller
// holds mu.
func (m *Manager) slowPathLocked() time.Duration {
	d := m.pool.pubEst
	if d == 0 {
		d = poolPublishGuess
	}
	return min(d, m.cfg.AddTimeout/2)
}

// newWaiterLocked queues p for the next pool node to be ready when one is
// due sooner than the slow path would take, counting one starting node per
// waiter, oldest first; it returns nil when none is. The caller holds mu.
func (m *Manager) newWaiterLocked(p *pod) *poolWaiter {
	var starting []*poolEntry
	for _, e := range m.pool.entries {
		if !e.ready && !e.releasing {
			starting = append(starting, e)
		}
	}
	k := len(m.pool.waiters)
	if k >= len(starting) {
		return nil
	}
	slices.SortFunc(starting, func(a, b *poolEntry) int { return a.rec.Created.Compare(b.rec.Created) })
	now := m.clock.Now()
	slow := m.slowPathLocked()
	due := starting[k].rec.Created.Add(m.pool.pubEst + poolSettle)
	if m.pool.pubEst == 0 || due.Sub(now) >= slow {
		return nil
	}
	w := &poolWaiter{p: p, done: make(chan struct{}), since: now, deadline: now.Add(slow)}
	m.pool.waiters = append(m.pool.waiters, w)
	return w
}

// handToWaiterLocked gives the just ready pool node e to the first
// waiting ADD, if any, and returns it. The caller holds mu.
func (m *Manager) handToWaiterLocked(e *poolEntry) *poolWaiter {
	if len(m.pool.waiters) == 0 || e.releasing {
		return nil
	}
	w := m.pool.waiters[0]
	m.pool.waiters = slices.Delete(m.pool.waiters, 0, 1)
	m.takeEntryLocked(e, w.p)
	close(w.done)
	return w
}

// awaitPoolNode waits until a pool node is handed to w, its deadline
// passes or the Manager closes; it reports whether w got a node.
func (m *Manager) awaitPoolNode(w *poolWaiter) bool {
	t, c := m.clock.NewTimer(w.deadline.Sub(w.since))
	defer t.Stop()
	select {
	case <-w.done:
		m.poolWaited(w, "served")
		return true
	case <-c:
	case <-m.closing.Done():
	}
	m.mu.Lock()
	i := slices.Index(m.pool.waiters, w)
	if i >= 0 {
		m.pool.waiters = slices.Delete(m.pool.waiters, i, i+1)
	}
	m.mu.Unlock()
	if i < 0 {
		<-w.done // handed over just now, under mu
		m.poolWaited(w, "served")
		return true
	}
	m.poolWaited(w, "timeout")
	return false
}

func (m *Manager) poolWaited(w *poolWaiter, result string) {
	m.metrics.poolWaits.WithLabelValues(result).Inc()
	m.metrics.poolWaitSeconds.Observe(m.clock.Since(w.since).Seconds())
}
