package main

import (
	"runtime/metrics"
	"testing"
)

// TestReleasePolicy walks an idle daemon, a burst and the follow-up.
func TestReleasePolicy(t *testing.T) {
	const MiB = 1 << 20
	p := releasePolicy{at: 100 * MiB}
	for _, step := range []struct {
		name   string
		allocs uint64
		want   bool
	}{
		{"idle: little allocated", 105 * MiB, false},
		{"idle: still under releaseAfter", 100*MiB + releaseAfter - 1, false},
		{"releaseAfter allocated", 100*MiB + releaseAfter, true},
		{"follow-up for pooled buffers", 101*MiB + releaseAfter, true},
		{"then idle again", 105*MiB + releaseAfter, false},
		{"idle", 110*MiB + releaseAfter, false},
		{"a burst", 2000 * MiB, true},
		{"a burst that goes on", 3000 * MiB, true},
		{"its follow-up", 3001 * MiB, true},
		{"idle after it", 3002 * MiB, false},
	} {
		if got := p.due(step.allocs); got != step.want {
			t.Fatalf("%s: due(%d MiB) = %v, want %v", step.name, step.allocs/MiB, got, step.want)
		}
	}
}

// TestReleaseMetrics: the runtime has the metric the policy reads.
func TestReleaseMetrics(t *testing.T) {
	s := []metrics.Sample{{Name: allocsMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("%s: kind %v, want uint64", s[0].Name, s[0].Value.Kind())
	}
	if sampleUint(s[0]) == 0 {
		t.Errorf("%s = 0", allocsMetric)
	}
}
