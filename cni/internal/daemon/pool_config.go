package daemon

import (
	"fmt"
	"strconv"
	"time"
)

// Defaults of PoolTuning.
const (
	// DefaultPoolParallel is how many pool nodes start at once: a node
	// spends its few seconds of start-up mostly waiting for the control
	// plane's batches, so a handful overlap well even on two cores.
	DefaultPoolParallel = 4
	// DefaultPoolIdle is how long a grown pool waits without takes before
	// it shrinks back to its size.
	DefaultPoolIdle = 20 * time.Second
	// poolMaxFactor gives PoolTuning.Max its default: this many times the
	// pool's size.
	poolMaxFactor = 4
)

// PoolTuning is how the pool follows bursts of ADDs (see pool_grow.go).
// The zero value takes the defaults.
type PoolTuning struct {
	// Max caps how far the pool grows while ADDs find it empty; 0 is
	// four times the pool's size, and the size itself turns growth off.
	Max int
	// Parallel is how many pool nodes may start at once; 0 is
	// DefaultPoolParallel.
	Parallel int
	// Idle is how long a grown pool waits without takes before it
	// shrinks back to its size; 0 is DefaultPoolIdle.
	Idle time.Duration
}

// withDefaults fills in zero fields for a pool of size nodes.
func (t PoolTuning) withDefaults(size int) PoolTuning {
	if t.Max == 0 {
		t.Max = poolMaxFactor * size
	}
	t.Max = max(t.Max, size)
	if t.Parallel == 0 {
		t.Parallel = DefaultPoolParallel
	}
	if t.Idle == 0 {
		t.Idle = DefaultPoolIdle
	}
	return t
}

// Validate reports settings no pool of size nodes can have, naming the
// flag.
func (t PoolTuning) Validate(size int) error {
	if t.Max < 0 || (t.Max != 0 && t.Max < size) {
		return fmt.Errorf("--pool-max %d: want 0 (four times --pool-size) or at least --pool-size (%d)", t.Max, size)
	}
	if t.Parallel < 0 {
		return fmt.Errorf("--pool-parallel %d: want 0 (the default, %d) or more", t.Parallel, DefaultPoolParallel)
	}
	if t.Idle < 0 {
		return fmt.Errorf("--pool-idle %v: want 0 (the default, %v) or a positive duration", t.Idle, DefaultPoolIdle)
	}
	return nil
}

// PoolTuningFromEnv reads TS_CNI_POOL_MAX, TS_CNI_POOL_PARALLEL and
// TS_CNI_POOL_IDLE; unset or empty ones stay zero (their defaults).
func PoolTuningFromEnv(getenv func(string) string) (PoolTuning, error) {
	var t PoolTuning
	count := func(k string, dst *int) error {
		v := getenv(k)
		if v == "" {
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%s=%q is not a count (0 or more)", k, v)
		}
		*dst = n
		return nil
	}
	if err := count("TS_CNI_POOL_MAX", &t.Max); err != nil {
		return t, err
	}
	if err := count("TS_CNI_POOL_PARALLEL", &t.Parallel); err != nil {
		return t, err
	}
	if v := getenv("TS_CNI_POOL_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return t, fmt.Errorf("TS_CNI_POOL_IDLE=%q is not a duration like 1m (0 or more)", v)
		}
		t.Idle = d
	}
	return t, nil
}
