package daemon

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tailscale.com/types/key"
	"tailscale.com/types/logger"
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
	h.startWith(start)
	recovered, _ := h.m.Recover(context.Background())
	if recovered != pods {
		t.Errorf("recovered %d pods, want %d", recovered, pods)
	}
	if got := most.Load(); got > recoverStarts {
		t.Errorf("%d nodes started at once, want at most %d", got, recoverStarts)
	}
	t.Logf("at most %d nodes started at once", most.Load())
}

// retryBackend is a fake node that answers for its key and records which
// peers' stale sessions it was asked to drop.
type retryBackend struct {
	PodBackend
	key key.NodePublic

	mu    sync.Mutex
	asked []key.NodePublic
}

func (b *retryBackend) NodeKey() key.NodePublic { return b.key }

func (b *retryBackend) Handshake(peer key.NodePublic) podbackend.Handshake {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.asked = append(b.asked, peer)
	return podbackend.Handshake{} // nothing lost: one look is enough
}

func (b *retryBackend) ResetHandshake(key.NodePublic) {}

// TestRecoverRetriesHandshakes checks that the handshakes between every
// pair of recovered nodes are looked at in both directions (whichever of
// the two came back second does it), and that no node is asked about
// itself. Which lost handshakes are dropped is podbackend.Handshake.Lost's
// (tested there) and the e2e restart benchmark's to measure.
func TestRecoverRetriesHandshakes(t *testing.T) {
	h := newHarness(t)
	const pods = 5
	for i := range pods {
		h.add(h.pod("p" + string(rune('a'+i))))
	}
	h.m.Close()
	var mu sync.Mutex
	var nodes []*retryBackend
	start := func(logf logger.Logf, cfg podbackend.Config) (PodBackend, error) {
		b, err := h.be.start(logf, cfg)
		if err != nil {
			return nil, err
		}
		r := &retryBackend{PodBackend: b, key: key.NewNode().Public()}
		mu.Lock()
		nodes = append(nodes, r)
		mu.Unlock()
		return r, nil
	}
	h.startWith(start)
	if recovered, _ := h.m.Recover(context.Background()); recovered != pods {
		t.Fatalf("recovered %d pods, want %d", recovered, pods)
	}
	h.m.recovering.Wait()
	asked := func(b *retryBackend, peer key.NodePublic) bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, k := range b.asked {
			if k == peer {
				return true
			}
		}
		return false
	}
	if len(nodes) != pods {
		t.Fatalf("%d nodes started, want %d", len(nodes), pods)
	}
	for i, a := range nodes {
		if asked(a, a.key) {
			t.Errorf("node %d asked to drop its session with itself", i)
		}
		for _, b := range nodes[i+1:] {
			if !asked(a, b.key) || !asked(b, a.key) {
				t.Errorf("two recovered nodes: asked about the other %v and %v, want both", asked(a, b.key), asked(b, a.key))
			}
		}
	}
}
