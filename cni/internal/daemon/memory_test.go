package daemon

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReleaserCoalesces has many callers ask for a release while one runs:
// all return, each after a release that began after it asked, and they
// share one.
func TestReleaserCoalesces(t *testing.T) {
	var runs, waiting atomic.Int32
	gate := make(chan struct{})
	var startedAt []time.Time
	var mu sync.Mutex
	r := &releaser{free: func() {
		mu.Lock()
		startedAt = append(startedAt, time.Now())
		mu.Unlock()
		if runs.Add(1) == 1 {
			<-gate // the first release runs until the waiters have asked
		}
	}, onWait: func() { waiting.Add(1) }}
	go r.release()
	for runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	const waiters = 10
	asked := time.Now()
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(r.release)
	}
	// Once every waiter waits behind the first release, end it.
	for waiting.Load() < waiters {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	if got := runs.Load(); got != 2 {
		t.Errorf("%d releases for 1 + %d callers, want 2", got, waiters)
	}
	mu.Lock()
	if len(startedAt) == 2 && startedAt[1].Before(asked) {
		t.Errorf("the waiters' release began before they asked")
	}
	mu.Unlock()
	r.release() // nothing in flight: runs at once
	if got := runs.Load(); got != 3 {
		t.Errorf("%d releases, want 3", got)
	}
}
