package daemon

import (
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// nodesClosed counts the pods' nodes DEL has closed. Closing one frees its
// packet buffers (megabytes) without allocating anything, so a release
// policy that waits for allocation must look at this too (the daemon's
// releaseMemory does).
var nodesClosed atomic.Uint64

// NodesClosed is how many pods' nodes DEL has closed since the daemon
// started. Safe for concurrent use.
func NodesClosed() uint64 { return nodesClosed.Load() }

// releaser coalesces the memory releases that node starts ask for (see
// startBackend): each needs one that began after it asked, and one serves
// every start waiting then. A release (a full GC, then every free page
// handed back to the kernel) holds the heap's lock while it scavenges, so
// a recovery starting 8 nodes at once, each releasing, took turns on it.
// Safe for concurrent use.
type releaser struct {
	mu      sync.Mutex
	running chan struct{} // closed when the release in flight ends; nil when none
	next    chan struct{} // the release the waiters share, once running ends
	free    func()        // debug.FreeOSMemory outside tests
	onWait  func()        // tests: called as a caller starts waiting
	onWoke  func()        // tests: called as a waiter sees its release end
}

var memRelease = &releaser{free: debug.FreeOSMemory}

// release returns once a release that started after the call has ended.
func (r *releaser) release() {
	r.mu.Lock()
	if r.running == nil {
		// Waiters may share a next release nobody has started yet (the
		// one in flight ended, and they have not woken): this one is it,
		// or they would wait on it forever.
		r.running, r.next = r.next, nil
		if r.running == nil {
			r.running = make(chan struct{})
		}
		r.mu.Unlock()
		r.run()
		return
	}
	// One is in flight; it may have started before our garbage. Share the
	// next one: the first waiter to see this one end runs it.
	if r.next == nil {
		r.next = make(chan struct{})
	}
	running, next := r.running, r.next
	r.mu.Unlock()
	if r.onWait != nil {
		r.onWait()
	}
	<-running
	if r.onWoke != nil {
		r.onWoke()
	}
	r.mu.Lock()
	if r.running == nil && r.next == next {
		r.running, r.next = next, nil
		r.mu.Unlock()
		r.run()
		return
	}
	r.mu.Unlock()
	<-next
}

// run releases, then ends the release in flight.
func (r *releaser) run() {
	r.free()
	r.mu.Lock()
	close(r.running)
	r.running = nil
	r.mu.Unlock()
}
