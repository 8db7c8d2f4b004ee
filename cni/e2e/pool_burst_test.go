package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestPoolBurst starts pods 4 at once, as kubelet does on a Deployment's
// scale-up, against a pool of 2 and Headscale with its default batching:
// every ADD succeeds and every pod answers a peer; the pool grows while
// ADDs find it empty, then, idle, shrinks back to 2 and deletes the nodes
// beyond from Headscale; SIGTERM deletes the rest. It prints ADD latency
// and what the pool did (TSCNI_POOL_BURST=N pods, default 12; TSCNI_POOL_SIZE
// for another pool size).
func TestPoolBurst(t *testing.T) {
	n, size := 12, 2
	if v, err := strconv.Atoi(os.Getenv("TSCNI_POOL_BURST")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("TSCNI_POOL_SIZE")); err == nil && v > 0 {
		size = v
	}
	const idle = 10 * time.Second
	e := newEnvWith(t, envOptions{defaultBatching: true}, "TS_CNI_POOL_SIZE="+strconv.Itoa(size), "TS_CNI_POOL_IDLE="+idle.String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e.waitPoolReady(t, size)
	peer := e.newPod("peer")
	if _, err := e.add(ctx, peer); err != nil {
		t.Fatalf("ADD peer: %v", err)
	}
	e.waitPoolReady(t, size)
	metric := func(name string) float64 { v, _ := tryMetric(t, e.metrics, name); return v }
	hits0 := metric(`tailscale_cni_pool_takes_total{result="hit"}`)

	pods := make([]*pod, n)
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range pods {
		pods[i] = e.newPod(fmt.Sprintf("b%02d", i))
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			s := time.Now()
			_, errs[i] = e.add(ctx, pods[i])
			lat[i] = time.Since(s)
		})
	}
	wg.Wait()
	took := time.Since(start)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ADD %s: %v", pods[i].name, err)
		}
	}
	hits := metric(`tailscale_cni_pool_takes_total{result="hit"}`) - hits0
	t.Logf("pool of %d, %d ADDs 4 at once, Headscale's default batching: ADD p50 %v p95 %v max %v; all in %v; pool %.0f hits, %.0f misses; %.0f waited for a starting node (%.0f gave up); pool grew to %.0f (max %.0f)",
		size, n, percentile(lat, 0.5).Round(time.Millisecond), percentile(lat, 0.95).Round(time.Millisecond), percentile(lat, 1).Round(time.Millisecond),
		took.Round(time.Millisecond), hits, metric(`tailscale_cni_pool_takes_total{result="miss_empty"}`),
		metric(`tailscale_cni_pool_waits_total{result="served"}`)+metric(`tailscale_cni_pool_waits_total{result="timeout"}`),
		metric(`tailscale_cni_pool_waits_total{result="timeout"}`), metric("tailscale_cni_pool_target"), metric("tailscale_cni_pool_max"))
	last, _, missing := reachEvery(t, append([]*pod{peer}, pods...), time.Now(), time.Minute)
	if len(missing) > 0 {
		t.Fatalf("pods never answered a peer: %v", missing)
	}
	t.Logf("every pod answered a peer, the last %v after the burst", last.Round(time.Millisecond))

	// Idle: back to its size, in the daemon and in Headscale.
	waitFor(t, "the pool to shrink back to "+strconv.Itoa(size), idle+2*time.Minute, func() bool {
		return metric("tailscale_cni_pool_target") == float64(size) && len(e.poolNodes(t)) == size &&
			metric(`tailscale_cni_pool_nodes{state="ready"}`) == float64(size) && metric(`tailscale_cni_pool_nodes{state="starting"}`) == 0
	})
	t.Logf("idle for %v: pool back to %d (%.0f nodes deleted); %s", idle, size, metric("tailscale_cni_pool_released_total"), e.poolStatus())

	for _, p := range append(pods, peer) {
		if err := e.del(ctx, p); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
	e.stopDaemon(false)
	if devs := devicesByID(t, e.cp); len(devs) != 0 {
		t.Errorf("nodes left after every DEL and SIGTERM: %v", devs)
	}
}
