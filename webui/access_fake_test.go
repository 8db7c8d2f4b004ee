package webui

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// memAccessStore is an AccessStore in memory, standing in for the cluster
// in unit and browser tests. activate and expire play the operator.
type memAccessStore struct {
	now func() time.Time

	mu       sync.Mutex
	targets  []AccessTarget
	requests map[string]*AccessRequest
	seq      int
	writes   int // successful changes, so that a test can say nothing changed
}

func newMemAccessStore(now func() time.Time, targets ...AccessTarget) *memAccessStore {
	return &memAccessStore{now: now, targets: targets, requests: map[string]*AccessRequest{}}
}

func (m *memAccessStore) Targets(context.Context) ([]AccessTarget, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]AccessTarget(nil), m.targets...), nil
}

func (m *memAccessStore) Requests(context.Context) ([]AccessRequest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []AccessRequest
	for _, r := range m.requests {
		out = append(out, copyRequest(r))
	}
	return out, nil
}

func copyRequest(r *AccessRequest) AccessRequest {
	c := *r
	c.History = append([]AccessEvent(nil), r.History...)
	if r.Decision != nil {
		d := *r.Decision
		c.Decision = &d
	}
	return c
}

func (m *memAccessStore) Request(_ context.Context, name string) (AccessRequest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.requests[name]
	if !ok {
		return AccessRequest{}, ErrAccessNotFound
	}
	return copyRequest(r), nil
}

func (m *memAccessStore) Create(_ context.Context, requester string, c AccessRequestCreate) (AccessRequest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	now := m.now()
	r := &AccessRequest{
		Name: fmt.Sprintf("%s-%d", c.Target, m.seq), Target: c.Target, Requester: requester, Seconds: c.Seconds, Reason: c.Reason,
		Phase: AccessPending, CreatedAt: now.Add(time.Duration(m.seq) * time.Millisecond),
		History: []AccessEvent{{Type: "Requested", At: now, By: requester, Message: c.Reason}},
	}
	m.requests[r.Name] = r
	m.writes++
	return copyRequest(r), nil
}

func (m *memAccessStore) Decide(_ context.Context, name string, d AccessDecision) (AccessRequest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.requests[name]
	if !ok {
		return AccessRequest{}, ErrAccessNotFound
	}
	r.Decision = &d
	r.Phase, r.EndedAt = AccessDenied, d.At
	ev := "Denied"
	if d.Approved {
		r.Phase, r.EndedAt, ev = AccessApproved, time.Time{}, "Approved"
	}
	r.History = append(r.History, AccessEvent{Type: ev, At: d.At, By: d.By, Message: d.Reason})
	m.writes++
	return copyRequest(r), nil
}

func (m *memAccessStore) Revoke(_ context.Context, name, by, reason string) (AccessRequest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.requests[name]
	if !ok {
		return AccessRequest{}, ErrAccessNotFound
	}
	now := m.now()
	r.Phase, r.EndedAt = AccessRevoked, now
	r.History = append(r.History, AccessEvent{Type: "Revoked", At: now, By: by, Message: reason})
	m.writes++
	return copyRequest(r), nil
}

// activate grants every approved request, as the operator would.
func (m *memAccessStore) activate() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, r := range m.requests {
		if r.Phase == AccessApproved {
			r.Phase, r.GrantedAt, r.ExpiresAt = AccessActive, now, now.Add(time.Duration(r.Seconds)*time.Second)
			r.History = append(r.History, AccessEvent{Type: "Granted", At: now})
		}
	}
}

func (m *memAccessStore) changes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes
}
