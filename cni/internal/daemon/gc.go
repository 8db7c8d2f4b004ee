package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"time"

	"tsymbiote.dhouti.dev/cni/internal/cnierr"
)

// DefaultSweepInterval is how often the daemon looks for pods whose netns
// is gone without a DEL.
const DefaultSweepInterval = 15 * time.Second

// GC (CNI 1.1) removes every attachment of network that valid does not
// list, as DEL would: node, links, rules, state. Attachments of other
// networks are left alone, and so are ones whose ADD is still running
// (GC waits for it, then judges the result). It then sweeps links and
// tables no pod owns. It returns how many attachments it removed.
func (m *Manager) GC(ctx context.Context, network string, valid []Attachment) (removed int, err error) {
	start := m.clock.Now()
	defer func() { m.metrics.observe("gc", m.clock.Since(start), err) }()
	if network == "" {
		return 0, cnierr.Newf(cnierr.InvalidNetConf, "GC needs the netconf's name")
	}
	keep := map[[2]string]bool{}
	keepID := map[string]bool{}
	for _, a := range valid {
		if err := ValidContainerID(a.ContainerID); err != nil {
			return 0, cnierr.New(cnierr.InvalidNetConf, "cni.dev/valid-attachments holds an invalid container ID", err)
		}
		keep[[2]string{a.ContainerID, a.IfName}] = true
		keepID[a.ContainerID] = true
	}
	isValid := func(rec *PodRecord) bool {
		if rec.IfName == "" {
			return keepID[rec.ContainerID]
		}
		return keep[[2]string{rec.ContainerID, rec.IfName}]
	}
	for _, id := range m.knownIDs() {
		unlock := m.lock(id)
		p := m.podByID(id)
		if p == nil {
			if rec, err := m.load(id); err == nil {
				p = &pod{rec: *rec, socket: SocketPath(m.cfg.RunDir, rec.Namespace, rec.Pod, id)}
			}
		}
		if p != nil && (p.rec.Network == network || p.rec.Network == "") && !isValid(&p.rec) {
			m.logf("gc: removing pod %s/%s (container %s): the runtime no longer lists it", p.rec.Namespace, p.rec.Pod, id)
			if err := m.delete(ctx, p); err != nil && !isNodeNotDeleted(err) {
				m.logf("gc: pod %s: %v", id, err)
			}
			m.metrics.removed.WithLabelValues("gc").Inc()
			removed++
		}
		unlock()
	}
	if _, err := m.net.Sweep(m.logf, m.ownsLink, m.ownsTable); err != nil {
		m.logf("gc: sweep: %v", err)
	}
	m.sweepSockets()
	return removed, nil
}

// knownIDs are the container IDs in memory and in the state dir, sorted.
func (m *Manager) knownIDs() []string {
	ids := map[string]bool{}
	m.mu.Lock()
	for id := range m.pods {
		ids[id] = true
	}
	m.mu.Unlock()
	entries, _ := os.ReadDir(filepath.Join(m.cfg.StateDir, "pods"))
	for _, e := range entries {
		if ValidContainerID(e.Name()) == nil {
			ids[e.Name()] = true
		}
	}
	out := make([]string, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// SweepGone removes, every interval until ctx ends, the attachments whose
// netns is gone although no DEL came: a runtime that crashed, or one
// that (like containerd) never calls GC.
func (m *Manager) SweepGone(ctx context.Context, interval time.Duration) {
	t, tick := m.clock.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		m.sweepGone(ctx)
	}
}

// sweepGone makes one pass and returns how many attachments it removed.
// Pods whose ADD or recovery is still running (not Ready) are left to it.
func (m *Manager) sweepGone(ctx context.Context) int {
	m.mu.Lock()
	var ids []string
	for id, p := range m.pods {
		if p.rec.Ready {
			ids = append(ids, id)
		}
	}
	m.mu.Unlock()
	slices.Sort(ids)
	removed := 0
	for _, id := range ids {
		unlock := m.lock(id)
		p := m.podByID(id)
		if p != nil && p.rec.Ready && !m.netnsExists(p.rec.NetNS) {
			m.logf("sweep: removing pod %s/%s (container %s): its netns %s is gone and no DEL came", p.rec.Namespace, p.rec.Pod, id, p.rec.NetNS)
			if err := m.delete(ctx, p); err != nil && !isNodeNotDeleted(err) {
				m.logf("sweep: pod %s: %v", id, err)
			}
			m.metrics.removed.WithLabelValues("sweep").Inc()
			removed++
		}
		unlock()
	}
	return removed
}

func isNodeNotDeleted(err error) bool { return errors.Is(err, errNodeNotDeleted) }
