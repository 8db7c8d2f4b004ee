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

// TestReleaserNewCallerServesWaiters has a caller start a release after
// the one in flight ended but before its waiter woke: that release is the
// waiter's, which must not wait for a next one nobody runs.
func TestReleaserNewCallerServesWaiters(t *testing.T) {
	var runs atomic.Int32
	first, late := make(chan struct{}), make(chan struct{})
	lateEntered := make(chan struct{})
	r := &releaser{free: func() {
		switch runs.Add(1) {
		case 1:
			<-first
		case 2:
			close(lateEntered)
			<-late
		}
	}}
	waiting := make(chan struct{})
	r.onWait = func() { close(waiting) }
	// The waiter wakes, and a late caller starts its release before the
	// waiter looks at what runs.
	r.onWoke = func() {
		go r.release()
		<-lateEntered
	}
	go r.release()
	for runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	done := make(chan struct{})
	go func() { r.release(); close(done) }()
	<-waiting
	close(first)
	<-lateEntered
	time.Sleep(20 * time.Millisecond) // let the waiter look while the late release runs
	close(late)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter never returned: it waits on a release nobody runs")
	}
	if got := runs.Load(); got != 2 {
		t.Errorf("%d releases, want 2 (the late caller's serves the waiter)", got)
	}
}
