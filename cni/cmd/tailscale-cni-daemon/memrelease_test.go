package main

import (
	"runtime/metrics"
	"testing"
)

// TestReleasePolicy walks an idle daemon, a burst and the follow-up, with
// a small live heap (the floor applies) and a large one (the share does).
func TestReleasePolicy(t *testing.T) {
	const MiB = 1 << 20
	for _, tc := range []struct {
		name  string
		live  uint64
		after uint64 // what releaseAfter must give for live
	}{
		{"10 pods", 450 * MiB, releaseAfterMin},
		{"110 pods", 5120 * MiB, 80 * MiB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := releaseAfter(tc.live); got != tc.after {
				t.Fatalf("releaseAfter(%d MiB) = %d MiB, want %d MiB", tc.live/MiB, got/MiB, tc.after/MiB)
			}
			a := tc.after
			p := releasePolicy{at: 100 * MiB}
			for _, step := range []struct {
				name   string
				allocs uint64
				want   bool
			}{
				{"idle: little allocated", 105 * MiB, false},
				{"idle: still under releaseAfter", 100*MiB + a - 1, false},
				{"releaseAfter allocated", 100*MiB + a, true},
				{"follow-up for pooled buffers", 101*MiB + a, true},
				{"then idle again", 105*MiB + a, false},
				{"idle", 110*MiB + a, false},
				{"a burst", 100*MiB + 5*a, true},
				{"a burst that goes on", 100*MiB + 7*a, true},
				{"its follow-up", 101*MiB + 7*a, true},
				{"idle after it", 102*MiB + 7*a, false},
			} {
				if got := p.due(step.allocs, tc.live, 0); got != step.want {
					t.Fatalf("%s: due(%d MiB, live %d MiB) = %v, want %v", step.name, step.allocs/MiB, tc.live/MiB, got, step.want)
				}
			}
		})
	}
}

// TestReleaseAfterDel: a DEL frees a node's buffers without allocating;
// the next tick releases, and the one after it once more.
func TestReleaseAfterDel(t *testing.T) {
	const MiB = 1 << 20
	p := releasePolicy{at: 100 * MiB}
	for _, step := range []struct {
		name   string
		closed uint64
		want   bool
	}{
		{"idle", 0, false},
		{"a DEL", 1, true},
		{"its follow-up", 1, true},
		{"idle again", 1, false},
		{"three DELs", 4, true},
		{"their follow-up", 4, true},
		{"idle", 4, false},
	} {
		if got := p.due(101*MiB, 450*MiB, step.closed); got != step.want {
			t.Fatalf("%s: due(closed %d) = %v, want %v", step.name, step.closed, got, step.want)
		}
	}
}

// TestReleaseMetrics: the runtime has the metrics the policy reads.
func TestReleaseMetrics(t *testing.T) {
	s := []metrics.Sample{{Name: allocsMetric}, {Name: liveMetric}}
	metrics.Read(s)
	for _, m := range s {
		if m.Value.Kind() != metrics.KindUint64 {
			t.Fatalf("%s: kind %v, want uint64", m.Name, m.Value.Kind())
		}
	}
	if sampleUint(s[0]) == 0 {
		t.Errorf("%s = 0", allocsMetric)
	}
}
