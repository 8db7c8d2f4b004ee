package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// blockNodes makes every new node's registration wait until the returned
// func is called.
func (h *harness) blockNodes() (release func()) {
	c := make(chan struct{})
	h.be.mu.Lock()
	h.be.block = c
	h.be.mu.Unlock()
	return func() {
		h.be.mu.Lock()
		h.be.block = nil
		h.be.mu.Unlock()
		close(c)
	}
}

func (h *harness) setPubEst(d time.Duration) {
	h.m.mu.Lock()
	h.m.pool.pubEst = d
	h.m.mu.Unlock()
}

// poolRecords counts the pool records on disk: the untaken nodes.
func (h *harness) poolRecords() int {
	n := 0
	for _, d := range h.poolDirs() {
		if _, err := os.Stat(filepath.Join(h.cfg.StateDir, poolDirName, d, poolRecordFile)); err == nil {
			n++
		}
	}
	return n
}

type addResult struct {
	res *Result
	err error
}

func (h *harness) addAsync(a Attachment) chan addResult {
	c := make(chan addResult, 1)
	go func() {
		res, err := h.m.Add(context.Background(), a)
		c <- addResult{res, err}
	}()
	return c
}

func (h *harness) poolID(a Attachment) string {
	h.t.Helper()
	rec, err := h.m.load(a.ContainerID)
	if err != nil {
		h.t.Fatal(err)
	}
	return rec.PoolID
}

// TestPoolBurst: an ADD that finds no node waits for a starting one due
// sooner than the slow path and takes it once published; one whose node is
// late takes the slow path after the slow path's time; misses grow the
// pool, which shrinks back to its size once idle.
func TestPoolBurst(t *testing.T) {
	h := newHarness(t)
	h.cfg.PoolTuning = PoolTuning{Max: 3, Idle: time.Minute}
	h.startPool(1)
	release := h.blockNodes()
	defer func() {
		if release != nil {
			release()
		}
	}()
	a := h.pod("a")
	h.add(a) // takes the ready node; its refill blocks
	if h.poolID(a) == "" {
		t.Fatal("the first ADD did not take the pool node")
	}
	waitUntil(t, "the refill to start", func() bool { return h.m.PoolStatus().Starting == 1 })
	h.setPubEst(2 * time.Second)
	h.clock.Advance(time.Second) // the refill is due in 1 s, the slow path takes 2 s

	b := h.pod("b")
	bc := h.addAsync(b)
	waitUntil(t, "b to wait", func() bool { return h.m.PoolStatus().Waiting == 1 })
	if st := h.m.PoolStatus(); st.Target != 2 || !strings.Contains(st.String(), "grown to 2 of at most 3; 1 ADDs waiting") {
		t.Errorf("pool while b waits: %v (%+v)", st, st)
	}
	release()
	release = nil
	if r := <-bc; r.err != nil {
		t.Fatalf("ADD b: %v", r.err)
	}
	if h.poolID(b) == "" {
		t.Error("b did not get the pool node it waited for")
	}
	if got := testutil.ToFloat64(h.m.metrics.poolWaits.WithLabelValues("served")); got != 1 {
		t.Errorf("waits served = %v, want 1", got)
	}
	h.waitPool(2) // grown by b's miss

	// Two more ADDs take the two ready nodes; the next finds the refills
	// blocked and waits until the slow path's time has passed.
	release = h.blockNodes()
	h.add(h.pod("c"))
	h.add(h.pod("d"))
	waitUntil(t, "the refills to start", func() bool { return h.m.PoolStatus().Starting == 2 })
	h.clock.Advance(time.Second)
	e := h.pod("e")
	ec := h.addAsync(e)
	waitUntil(t, "e to wait", func() bool { return h.m.PoolStatus().Waiting == 1 })
	h.clock.Advance(2 * time.Second)
	waitUntil(t, "e to give up", func() bool { return testutil.ToFloat64(h.m.metrics.poolWaits.WithLabelValues("timeout")) == 1 })
	release() // the slow path registers too
	release = nil
	if r := <-ec; r.err != nil {
		t.Fatalf("ADD e: %v", r.err)
	}
	if h.poolID(e) != "" {
		t.Error("e took a pool node after giving up")
	}
	if hit, miss := testutil.ToFloat64(h.m.metrics.poolTakes.WithLabelValues("hit")), testutil.ToFloat64(h.m.metrics.poolTakes.WithLabelValues("miss_empty")); hit != 4 || miss != 1 {
		t.Errorf("hits %v, misses %v; want 4 and 1", hit, miss)
	}
	h.waitPool(3) // grown to its max by e's miss
	if st := h.m.PoolStatus(); st.Target != 3 || st.Max != 3 {
		t.Errorf("pool after the burst: %+v", st)
	}

	// Idle for a minute: back to one node, the others deleted.
	live := len(h.cp.liveNodes())
	h.clock.Advance(time.Minute)
	h.m.kickPool()
	waitUntil(t, "the pool to shrink", func() bool {
		st := h.m.PoolStatus()
		return st.Target == 1 && st.Ready == 1 && h.poolRecords() == 1
	})
	if got := live - len(h.cp.liveNodes()); got != 2 {
		t.Errorf("shrinking deleted %d nodes from the control plane, want 2", got)
	}
	if got := testutil.ToFloat64(h.m.metrics.poolReleased); got != 2 {
		t.Errorf("released = %v, want 2", got)
	}
}

// TestPoolParallel: the filler starts at most Parallel nodes at once.
func TestPoolParallel(t *testing.T) {
	h := newHarness(t)
	release := h.blockNodes()
	h.cfg.PoolSize = 5
	h.cfg.PoolTuning = PoolTuning{Parallel: 2}
	h.restart()
	h.m.Recover(context.Background())
	h.m.StartPool(context.Background())
	waitUntil(t, "two nodes to start", func() bool { return h.m.PoolStatus().Starting == 2 })
	for range 20 {
		time.Sleep(time.Millisecond)
		if st := h.m.PoolStatus(); st.Starting > 2 {
			t.Fatalf("%d nodes starting at once, want at most 2", st.Starting)
		}
	}
	release()
	h.waitPool(5)
}

// TestPoolNoWaitWhenSlowPathSooner: a node that just started is due later
// than the slow path would be done, so the ADD takes the slow path at once.
func TestPoolNoWaitWhenSlowPathSooner(t *testing.T) {
	h := newHarness(t)
	h.startPool(1)
	release := h.blockNodes()
	h.add(h.pod("a"))
	waitUntil(t, "the refill to start", func() bool { return h.m.PoolStatus().Starting == 1 })
	h.setPubEst(2 * time.Second)
	b := h.pod("b")
	bc := h.addAsync(b)
	waitUntil(t, "b to miss", func() bool {
		return testutil.ToFloat64(h.m.metrics.poolTakes.WithLabelValues("miss_empty")) == 1
	})
	release()
	if r := <-bc; r.err != nil {
		t.Fatalf("ADD b: %v", r.err)
	}
	if n := testutil.ToFloat64(h.m.metrics.poolWaits.WithLabelValues("timeout")) + testutil.ToFloat64(h.m.metrics.poolWaits.WithLabelValues("served")); n != 0 {
		t.Errorf("%v waits, want none", n)
	}
}

func TestPoolTuning(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		size    int
		want    PoolTuning // with defaults
		wantErr string
	}{
		{size: 2, want: PoolTuning{Max: 8, Parallel: DefaultPoolParallel, Idle: DefaultPoolIdle}},
		{size: 0, want: PoolTuning{Max: 0, Parallel: DefaultPoolParallel, Idle: DefaultPoolIdle}},
		{env: map[string]string{"TS_CNI_POOL_MAX": "2", "TS_CNI_POOL_PARALLEL": "1", "TS_CNI_POOL_IDLE": "30s"}, size: 2, want: PoolTuning{Max: 2, Parallel: 1, Idle: 30 * time.Second}},
		{env: map[string]string{"TS_CNI_POOL_MAX": "1"}, size: 2, wantErr: "--pool-max 1: want 0 (four times --pool-size) or at least --pool-size (2)"},
		{env: map[string]string{"TS_CNI_POOL_MAX": "-1"}, size: 2, wantErr: `TS_CNI_POOL_MAX="-1" is not a count`},
		{env: map[string]string{"TS_CNI_POOL_PARALLEL": "four"}, wantErr: `TS_CNI_POOL_PARALLEL="four" is not a count`},
		{env: map[string]string{"TS_CNI_POOL_IDLE": "60"}, wantErr: `TS_CNI_POOL_IDLE="60" is not a duration`},
		{env: map[string]string{"TS_CNI_POOL_IDLE": "-1m"}, wantErr: `TS_CNI_POOL_IDLE="-1m" is not a duration`},
	} {
		t.Run(fmt.Sprint(tc.env, tc.size), func(t *testing.T) {
			pt, err := PoolTuningFromEnv(func(k string) string { return tc.env[k] })
			if err == nil {
				err = pt.Validate(tc.size)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := pt.withDefaults(tc.size); got != tc.want {
				t.Errorf("tuning %+v, want %+v", got, tc.want)
			}
		})
	}
	if err := (PoolTuning{Parallel: -1}).Validate(1); err == nil || !strings.Contains(err.Error(), "--pool-parallel -1") {
		t.Errorf("negative parallel: %v", err)
	}
	if err := (PoolTuning{Idle: -time.Second}).Validate(1); err == nil || !strings.Contains(err.Error(), "--pool-idle -1s") {
		t.Errorf("negative idle: %v", err)
	}
}

func FuzzPoolTuningFromEnv(f *testing.F) {
	f.Add("8", "4", "1m", 2)
	f.Add("", "", "", 0)
	f.Add("-1", "x", "1h2m3.5s", 3)
	f.Add("99999999999999999999", "0", "-0s", 1)
	f.Fuzz(func(t *testing.T, maxN, parallel, idle string, size int) {
		env := map[string]string{"TS_CNI_POOL_MAX": maxN, "TS_CNI_POOL_PARALLEL": parallel, "TS_CNI_POOL_IDLE": idle}
		pt, err := PoolTuningFromEnv(func(k string) string { return env[k] })
		if err != nil {
			if !strings.HasPrefix(err.Error(), "TS_CNI_POOL_") {
				t.Errorf("error %q does not name the variable", err)
			}
			return
		}
		if pt.Max < 0 || pt.Parallel < 0 || pt.Idle < 0 {
			t.Fatalf("accepted negative tuning %+v", pt)
		}
		if size < 0 || size > 1000 {
			return
		}
		if pt.Validate(size) != nil {
			return
		}
		d := pt.withDefaults(size)
		if d.Max < size || d.Parallel <= 0 || d.Idle <= 0 {
			t.Errorf("defaults of %+v for size %d: %+v", pt, size, d)
		}
	})
}
