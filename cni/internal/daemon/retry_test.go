package daemon

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestRetryDeletes: DEL while the control plane is down tears the pod down
// at once and leaves its node to RetryDeletes, which deletes it once the
// control plane is back, and only once. Time is the injected clock's.
func TestRetryDeletes(t *testing.T) {
	const interval = time.Minute
	for _, tc := range []struct {
		name      string
		downTicks int  // ticks that find the control plane still down
		goneFirst bool // the node vanished meanwhile (an ephemeral node's GC)
	}{
		{name: "back before the first tick"},
		{name: "back after two ticks", downTicks: 2},
		{name: "node already gone", downTicks: 1, goneFirst: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			// The witness's node can never be deleted, so RetryDeletes
			// tries it on every tick: its count of attempts counts the
			// ticks processed. It sorts after the pod under test, which
			// each tick therefore handles first.
			a, witness := h.pod("a"), h.pod("z-witness")
			res, wres := h.add(a), h.add(witness)
			h.cp.setDown(true)
			h.del(a)
			h.del(witness)
			h.cp.mu.Lock()
			h.cp.stuck[wres.NodeID] = true
			h.cp.mu.Unlock()
			if got := h.net.liveObjects(); len(got) > 0 {
				t.Errorf("DEL with the control plane down left kernel objects: %v", got)
			}
			if rec, err := h.m.load(a.ContainerID); err != nil || !rec.Deleting {
				t.Fatalf("record after DEL with the control plane down = %+v, %v; want Deleting", rec, err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { h.m.RetryDeletes(ctx, interval) })
			defer wg.Wait()
			defer cancel()
			ticks := func() int { n, _ := h.cp.counts(wres.NodeID); return n - 1 } // less DEL's own attempt

			h.tickUntil(interval, func() bool { return ticks() >= tc.downTicks })
			if _, deleted := h.cp.counts(res.NodeID); deleted != 0 {
				t.Fatalf("node deleted while the control plane was down")
			}
			if tc.goneFirst {
				h.cp.mu.Lock()
				delete(h.cp.nodes, res.NodeID)
				h.cp.mu.Unlock()
			}
			h.cp.setDown(false)
			if _, err := h.m.load(a.ContainerID); err != nil {
				t.Fatalf("record gone before the control plane came back: %v", err)
			}
			h.tickUntil(interval, func() bool { _, err := h.m.load(a.ContainerID); return err != nil })
			callsThen, _ := h.cp.counts(res.NodeID)
			// Two more ticks: at least one whole tick after the delete.
			last := ticks()
			h.tickUntil(interval, func() bool { return ticks() >= last+2 })

			calls, deleted := h.cp.counts(res.NodeID)
			wantDeleted := 1
			if tc.goneFirst {
				wantDeleted = 0
			}
			if deleted != wantDeleted || calls != callsThen {
				t.Errorf("node deleted %d times (want %d), %d calls then %d: retried after it was gone", deleted, wantDeleted, callsThen, calls)
			}
			if got := h.cp.liveNodes(); !slices.Equal(got, []string{wres.NodeID}) {
				t.Errorf("nodes left = %v, want only the witness %s", got, wres.NodeID)
			}
		})
	}
}

// tickUntil advances the injected clock by interval, a tick at a time,
// until cond holds. Ticks that come before RetryDeletes made its ticker or
// while it is busy are lost, so it keeps ticking instead of counting.
func (h *harness) tickUntil(interval time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatal("condition not met after 10s of ticks")
		}
		h.clock.Advance(interval)
		time.Sleep(2 * time.Millisecond)
	}
}
