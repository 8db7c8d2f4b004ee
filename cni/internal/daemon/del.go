package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"tsymbiote.dhouti.dev/cni/internal/cnierr"
	"tsymbiote.dhouti.dev/controlplane"
)

// errNodeNotDeleted tells delete's internal callers (RetryDeletes) that the
// node is still in the control plane; Del reports success all the same.
var errNodeNotDeleted = errors.New("node not yet deleted from the control plane")

// deleteNodeTimeout bounds one attempt to delete a pod's node: DEL must not
// hang on a control plane that does not answer.
const deleteNodeTimeout = 15 * time.Second

// Del removes everything ADD made for the container. It succeeds for
// containers the daemon never saw and when called twice.
func (m *Manager) Del(ctx context.Context, a Attachment) (err error) {
	start := m.clock.Now()
	defer func() { m.metrics.observe("del", m.clock.Since(start), err) }()
	if err := m.validateAttachment(a, false); err != nil {
		return err
	}
	unlock := m.lock(a.ContainerID)
	defer unlock()
	p := m.podByID(a.ContainerID)
	if p == nil {
		p = m.deadPod(a)
	}
	if err := m.delete(ctx, p); err != nil && !errors.Is(err, errNodeNotDeleted) {
		return err
	}
	return nil
}

// deadPod is what is known of a container that is not in memory: maybe a
// record recovery could not bring back, maybe nothing but its ID.
func (m *Manager) deadPod(a Attachment) *pod {
	rec, err := m.load(a.ContainerID)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		m.logf("pod %s: unreadable state, removing it: %v", a.ContainerID, err)
	}
	if rec == nil {
		rec = &PodRecord{ContainerID: a.ContainerID, NetNS: a.NetNS}
	}
	return &pod{rec: *rec, socket: SocketPath(m.cfg.RunDir, rec.Namespace, rec.Pod, rec.ContainerID)}
}

// delete tears a pod down. The caller holds the container's lock.
func (m *Manager) delete(ctx context.Context, p *pod) error {
	id := p.rec.ContainerID
	m.mu.Lock()
	stopDNS := p.stopDNS
	p.stopDNS = nil
	m.mu.Unlock()
	if stopDNS != nil {
		stopDNS()
	}
	if p.backend != nil {
		p.backend.Close()
		nodesClosed.Add(1)
	}
	var errs []error
	// keepRecord: the node could not be deleted from the control plane.
	// The pod is gone from the node all the same (DEL must not wait on the
	// control plane, or pod deletion would hang for as long as it is
	// down); the record stays for RetryDeletes.
	keepRecord := false
	if p.rec.NodeID != "" {
		dctx, cancel := context.WithTimeout(ctx, deleteNodeTimeout)
		err := m.cp.DeleteDevice(dctx, p.rec.NodeID)
		cancel()
		if err != nil && !errors.Is(err, controlplane.ErrNotFound) {
			m.logf("pod %s: deleting node %s failed, will retry: %v", id, p.rec.NodeID, err)
			keepRecord = true
		}
	}
	pn := p.kernel()
	if p.rec.Table == 0 {
		pn.Table = -1 // unknown: Teardown still removes links by name
	}
	if err := m.net.Teardown(pn); err != nil {
		errs = append(errs, cnierr.New(cnierr.Internal, "removing links, rules and routes", err))
	}
	if keepRecord {
		p.rec.Deleting, p.rec.Ready = true, false
		if err := m.save(&p.rec); err != nil {
			errs = append(errs, cnierr.New(cnierr.IOFailure, "saving the record of a node still to delete", err))
		}
		m.removeSocket(p)
	} else if err := m.removeFiles(p); err != nil {
		errs = append(errs, cnierr.New(cnierr.IOFailure, "removing pod state", err))
	}
	m.mu.Lock()
	if m.pods[id] == p {
		delete(m.pods, id)
	}
	m.mu.Unlock()
	if len(errs) > 0 {
		return errs[0]
	}
	if keepRecord {
		return errNodeNotDeleted
	}
	return nil
}

func (m *Manager) removeFiles(p *pod) error {
	var errs []error
	if err := os.RemoveAll(PodDir(m.cfg.StateDir, p.rec.ContainerID)); err != nil {
		errs = append(errs, err)
	}
	if p.rec.NodeDir != "" {
		// A node from the pool: its identity lives in the pool's dir.
		if err := os.RemoveAll(p.rec.NodeDir); err != nil {
			errs = append(errs, err)
		}
	}
	m.removeSocket(p)
	return errors.Join(errs...)
}

// removeSocket removes the pod's socket and its dir. The socket dir is
// keyed by pod name: a newer sandbox of the same pod may serve it by now,
// and then it stays.
func (m *Manager) removeSocket(p *pod) {
	if p.socket != "" && m.socketOwner(p.socket, p) == nil {
		os.Remove(p.socket)
		os.Remove(filepath.Dir(p.socket))
	}
}

// socketOwner returns the live pod other than except serving socket, if any.
func (m *Manager) socketOwner(socket string, except *pod) *pod {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.pods {
		if p != except && p.socket == socket && p.backend != nil {
			return p
		}
	}
	return nil
}
