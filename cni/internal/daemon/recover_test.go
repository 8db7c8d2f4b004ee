package daemon

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"tailscale.com/net/netmon"
	"tailscale.com/types/logger"
	"tailscale.com/util/eventbus"
	"tsymbiote.dhouti.dev/cni/internal/podbackend"
)

// TestRecoverBoundsStarts restarts the daemon over more pods than
// recoverStarts and checks that every pod comes back while no more than
// recoverStarts nodes start at once.
func TestRecoverBoundsStarts(t *testing.T) {
	h := newHarness(t)
	const pods = 3*recoverStarts + 1
	for i := range pods {
		h.add(h.pod("p" + string(rune('a'+i))))
	}
	h.m.Close()
	var now, most atomic.Int32
	start := func(logf logger.Logf, cfg podbackend.Config) (PodBackend, error) {
		n := now.Add(1)
		defer now.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond) // long enough for starts to overlap
		return h.be.start(logf, cfg)
	}
	m, err := NewManager(logger.WithPrefix(t.Logf, "daemon: "), h.cfg, Deps{
		ControlPlane: h.cp,
		Network:      h.net,
		StartBackend: start,
		NewNetMon:    func(*eventbus.Bus, logger.Logf) (*netmon.Monitor, error) { return netmon.NewStatic(), nil },
		Clock:        h.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	recovered, _ := m.Recover(context.Background())
	if recovered != pods {
		t.Errorf("recovered %d pods, want %d", recovered, pods)
	}
	if got := most.Load(); got > recoverStarts {
		t.Errorf("%d nodes started at once, want at most %d", got, recoverStarts)
	}
	t.Logf("at most %d nodes started at once", most.Load())
}
