package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"tsymbiote.dhouti.dev/cni/internal/daemon"
)

// releaseEvery is how often releaseMemory considers a release.
const releaseEvery = 30 * time.Second

// A tick releases once the heap has allocated, since the last release,
// 1/releaseAfterShare of the live heap and at least releaseAfterMin (see
// releasePolicy). The live heap grows with the pods (each holds about
// 40 MiB of mostly untouched packet buffers), and so does a collection's
// cost: a fixed amount of garbage between releases would make an idle
// daemon's collections cost more per pod the more pods it has. At 110
// pods (about 5 GiB live) that is about 80 MiB of garbage, 0.7 MiB a pod;
// at 10 pods the 16 MiB floor.
const (
	releaseAfterMin   = 16 << 20
	releaseAfterShare = 64
)

// releaseMemory hands freed heap back to the kernel when there may be some
// to hand back. Each pod's WireGuard device and TUN take packet buffers
// (64 KiB each, in batches of 128) from pools that a burst fills and the
// GC later frees; Go's scavenger returns those pages slowly, so without
// this the daemon's RSS stays at its high-water mark, several MiB per pod.
//
// The collector alone would not do it: those buffers, mostly never
// touched, count in the live heap, so its next collection is gigabytes of
// allocation away at 110 pods, and garbage would sit in resident pages
// until then. A release (a forced full collection, then the scavenge) is
// the collection; releasePolicy decides when one is due.
func releaseMemory(ctx context.Context) {
	t := time.NewTicker(releaseEvery)
	defer t.Stop()
	samples := []metrics.Sample{{Name: allocsMetric}, {Name: liveMetric}}
	read := func() (allocs, live uint64) {
		metrics.Read(samples)
		return sampleUint(samples[0]), sampleUint(samples[1])
	}
	allocs, _ := read()
	p := releasePolicy{at: allocs}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			allocs, live := read()
			if p.due(allocs, live, daemon.NodesClosed()) {
				debug.FreeOSMemory()
			}
		}
	}
}

// allocsMetric is every byte the heap ever allocated; liveMetric the heap
// the last collection found live.
const (
	allocsMetric = "/gc/heap/allocs:bytes"
	liveMetric   = "/gc/heap/live:bytes"
)

// releaseAfter is how much allocation makes a release due with live bytes
// of live heap.
func releaseAfter(live uint64) uint64 {
	return max(releaseAfterMin, live/releaseAfterShare)
}

func sampleUint(s metrics.Sample) uint64 {
	if s.Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}

// releasePolicy decides, at each tick, whether a release is due.
//
// A release's cost is a full collection, about proportional to the heap
// it scans; at 110 idle pods two a minute were most of the daemon's CPU.
// Its benefit is the garbage it frees, and garbage comes only from
// allocation: so a release is due once the heap has allocated
// releaseAfter since the last one. An idle daemon allocates a few MiB a
// minute (40 pods: about 5, 110 pods: about 8), so it releases every few
// minutes; a burst of
// ADDs or traffic allocates far more, and releases at every tick as
// before.
//
// A DEL frees a node's buffers without allocating: a release is also due
// once DEL has closed a node since the last one.
//
// Every release so caused is followed by another at the next tick: pooled
// packet buffers (sync.Pool) survive one collection in the pool's victim
// cache and are freed by the second.
//
// Checking free pages instead (e43a9c4, reverted in cc3b7b3) missed
// exactly the garbage: free pages count only what a collection already
// freed.
type releasePolicy struct {
	at       uint64 // allocs at the last release
	closed   uint64 // nodes DEL had closed at the last release
	followUp bool   // the next tick releases again
}

// due reports whether to release now, given the heap's cumulative
// allocation, its live bytes, and how many nodes DEL has closed.
func (p *releasePolicy) due(allocs, live, closed uint64) bool {
	switch {
	case allocs-p.at >= releaseAfter(live), closed != p.closed:
		p.at, p.closed, p.followUp = allocs, closed, true
		return true
	case p.followUp:
		p.at, p.followUp = allocs, false
		return true
	}
	return false
}
