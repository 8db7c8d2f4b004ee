package controller_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/controller"
	"tsymbiote.dhouti.dev/operator/internal/setup"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
)

// fakePolicy is an in-memory control plane policy with version tokens.
// conflicts makes that many next writes fail as if another writer had
// just edited the policy (and does that edit); failWrites fails writes.
type fakePolicy struct {
	mu         sync.Mutex
	body       string
	version    int
	logins     []string
	conflicts  int
	failWrites error
	writes     int
}

func (f *fakePolicy) GetPolicy(context.Context) (*controlplane.Policy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &controlplane.Policy{Body: f.body, Version: fmt.Sprint(f.version)}, nil
}

func (f *fakePolicy) SetPolicy(_ context.Context, body, version string) (*controlplane.Policy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWrites != nil {
		return nil, f.failWrites
	}
	if f.conflicts > 0 {
		f.conflicts--
		f.body = strings.Replace(f.body, `"acls"`, fmt.Sprintf(`"hosts": {"other%d": "100.64.9.%d"}, "acls"`, f.version, f.version), 1)
		f.version++
	}
	if version != fmt.Sprint(f.version) {
		return nil, controlplane.ErrPolicyConflict
	}
	f.body, f.writes = body, f.writes+1
	f.version++
	return &controlplane.Policy{Body: body, Version: fmt.Sprint(f.version)}, nil
}

func (f *fakePolicy) ValidatePolicy(context.Context, string) error { return nil }
func (f *fakePolicy) ListLogins(context.Context) ([]string, error) {
	return f.logins, nil
}

func (f *fakePolicy) members(t *testing.T) []string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	ms, err := controlplane.GroupMembers([]byte(f.body), "group:prod")
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

const unitPolicy = `{"groups": {"group:prod": []}, "acls": [{"action": "accept", "src": ["group:prod"], "dst": ["tag:prod:*"]}]}`

type accessFixture struct {
	t   *testing.T
	c   client.Client
	pe  *fakePolicy
	r   *controller.AccessRequestReconciler
	now time.Time
}

func newAccessFixture(t *testing.T) *accessFixture {
	f := &accessFixture{t: t, now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC),
		pe: &fakePolicy{body: unitPolicy, logins: []string{"alice@example.com", "bob@example.com"}}}
	f.c = fake.NewClientBuilder().WithScheme(setup.NewScheme()).
		WithStatusSubresource(&accessv1.AccessRequest{}, &accessv1.AccessTarget{}).
		WithObjects(&accessv1.AccessTarget{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: accessv1.AccessTargetSpec{
			Group: "group:prod", Approvers: []string{"k8s:user:admin"}, MaxDuration: metav1.Duration{Duration: time.Hour},
			AutoApprove: []accessv1.AutoApproveRule{{Requesters: []string{"bob@example.com"}, MaxDuration: metav1.Duration{Duration: 10 * time.Minute}}},
		}}).Build()
	f.r = &controller.AccessRequestReconciler{Client: f.c, Policy: f.pe, Recorder: record.NewFakeRecorder(100),
		Now: func() time.Time { return f.now }, TrustedAsserter: "webui",
		EditOptions: controlplane.EditOptions{Sleep: func(context.Context, int) error { return nil }}}
	return f
}

func (f *accessFixture) create(name, login string, d time.Duration, createdBy string) {
	f.t.Helper()
	ar := &accessv1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{accessv1.AnnotationCreatedBy: createdBy}},
		Spec: accessv1.AccessRequestSpec{Target: "prod", Requester: login, Duration: metav1.Duration{Duration: d}}}
	if err := f.c.Create(context.Background(), ar); err != nil {
		f.t.Fatal(err)
	}
}

func (f *accessFixture) decide(name string, a accessv1.Action) {
	f.t.Helper()
	ar := f.get(name)
	ar.Spec.Decision = &accessv1.Decision{Action: a, By: "k8s:user:admin"}
	if err := f.c.Update(context.Background(), ar); err != nil {
		f.t.Fatal(err)
	}
}

func (f *accessFixture) get(name string) *accessv1.AccessRequest {
	ar := &accessv1.AccessRequest{}
	if err := f.c.Get(context.Background(), types.NamespacedName{Name: name}, ar); err != nil {
		f.t.Fatal(err)
	}
	return ar
}

func (f *accessFixture) reconcile(name string) (ctrl.Result, error) {
	return f.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: name}})
}

func (f *accessFixture) mustReconcile(name string, want accessv1.Phase) ctrl.Result {
	f.t.Helper()
	res, err := f.reconcile(name)
	if err != nil {
		f.t.Fatalf("reconcile %s: %v", name, err)
	}
	if got := f.get(name).Status.Phase; got != want {
		f.t.Fatalf("%s: phase %s (%s), want %s", name, got, f.get(name).Status.Message, want)
	}
	return res
}

// TestAccessPhases walks a request through every phase with the injected
// clock: pending, approved and granted, waiting for exactly the rest of
// its duration, expired at the end.
func TestAccessPhases(t *testing.T) {
	f := newAccessFixture(t)
	f.create("r1", "alice@example.com", 30*time.Minute, "k8s:user:admin")
	f.mustReconcile("r1", accessv1.PhasePending)
	f.decide("r1", accessv1.ActionApprove)
	res := f.mustReconcile("r1", accessv1.PhaseActive)
	if res.RequeueAfter != 30*time.Minute {
		t.Errorf("RequeueAfter = %v, want 30m", res.RequeueAfter)
	}
	if ms := f.pe.members(t); !slices.Equal(ms, []string{"alice@example.com"}) {
		t.Fatalf("members = %v", ms)
	}
	f.now = f.now.Add(20 * time.Minute)
	if res := f.mustReconcile("r1", accessv1.PhaseActive); res.RequeueAfter != 10*time.Minute {
		t.Errorf("RequeueAfter after 20m = %v, want 10m", res.RequeueAfter)
	}
	f.now = f.now.Add(10 * time.Minute)
	f.mustReconcile("r1", accessv1.PhaseExpired)
	if ms := f.pe.members(t); len(ms) != 0 {
		t.Fatalf("members after expiry = %v", ms)
	}
	var events []string
	for _, h := range f.get("r1").Status.History {
		events = append(events, h.Event)
	}
	if got := strings.Join(events, ","); got != "Requested,Approved,Granted,Expired" {
		t.Errorf("history = %s", got)
	}

	// Deny, cancel, auto-approve (only for requests the WebUI vouched for).
	f.create("r2", "alice@example.com", time.Minute, "k8s:user:admin")
	f.mustReconcile("r2", accessv1.PhasePending)
	f.decide("r2", accessv1.ActionDeny)
	f.mustReconcile("r2", accessv1.PhaseDenied)
	f.create("r3", "alice@example.com", time.Minute, "k8s:user:admin")
	f.mustReconcile("r3", accessv1.PhasePending)
	f.decide("r3", accessv1.ActionRevoke)
	f.mustReconcile("r3", accessv1.PhaseRevoked)
	f.create("r4", "bob@example.com", 5*time.Minute, accessv1.K8sUser("webui"))
	f.mustReconcile("r4", accessv1.PhaseActive)
	f.create("r5", "bob@example.com", 5*time.Minute, "k8s:user:mallory")
	f.mustReconcile("r5", accessv1.PhasePending) // not vouched for: waits
	// Invalid: unknown login, over the maximum.
	f.create("r6", "ghost@example.com", time.Minute, "k8s:user:admin")
	f.mustReconcile("r6", accessv1.PhaseFailed)
	f.create("r7", "alice@example.com", 2*time.Hour, "k8s:user:admin")
	f.mustReconcile("r7", accessv1.PhaseFailed)
	t.Logf("r6: %s; r7: %s", f.get("r6").Status.Message, f.get("r7").Status.Message)
}

// TestAccessCASRetry shows a grant and a revoke each losing compare-and-swap
// rounds to another writer and keeping that writer's edits.
func TestAccessCASRetry(t *testing.T) {
	f := newAccessFixture(t)
	f.create("r1", "alice@example.com", time.Hour, "k8s:user:admin")
	f.mustReconcile("r1", accessv1.PhasePending)
	f.decide("r1", accessv1.ActionApprove)
	f.pe.conflicts = 3
	f.mustReconcile("r1", accessv1.PhaseActive)
	f.decide("r1", accessv1.ActionRevoke)
	f.pe.conflicts = 2
	f.mustReconcile("r1", accessv1.PhaseRevoked)
	for i := range 5 {
		if !strings.Contains(f.pe.body, `"hosts": {"other`) {
			t.Fatalf("other writer's edit %d lost: %s", i, f.pe.body)
		}
	}
	if n := strings.Count(f.pe.body, `"hosts"`); n != 5 {
		t.Errorf("%d of the other writer's 5 edits kept: %s", n, f.pe.body)
	}
	if ms := f.pe.members(t); len(ms) != 0 {
		t.Errorf("members = %v", ms)
	}
	// A policy write that keeps failing leaves the grant to a retry.
	f.create("r2", "alice@example.com", time.Hour, "k8s:user:admin")
	f.mustReconcile("r2", accessv1.PhasePending)
	f.decide("r2", accessv1.ActionApprove)
	f.pe.failWrites = errors.New("control plane down")
	if _, err := f.reconcile("r2"); err == nil {
		t.Fatalf("a failed write was not reported")
	}
	if p := f.get("r2").Status.Phase; p != accessv1.PhaseApproved {
		t.Fatalf("phase after a failed write = %s, want Approved (retried)", p)
	}
	f.pe.failWrites = nil
	f.mustReconcile("r2", accessv1.PhaseActive)
}

// TestAccessConverges crashes the operator between a policy write and its
// status write (the status update is lost), and shows the next reconcile
// converges without a second write; and that a login with two grants stays
// in the group until both end.
func TestAccessConverges(t *testing.T) {
	f := newAccessFixture(t)
	f.create("r1", "alice@example.com", time.Hour, "k8s:user:admin")
	f.mustReconcile("r1", accessv1.PhasePending)
	f.decide("r1", accessv1.ActionApprove)
	saved := f.get("r1") // status Pending with the decision
	f.mustReconcile("r1", accessv1.PhaseActive)
	writes := f.pe.writes
	// "Crash": the status writes after the policy write are lost.
	cur := f.get("r1")
	cur.Status = saved.Status
	if err := f.c.Status().Update(context.Background(), cur); err != nil {
		t.Fatal(err)
	}
	f.mustReconcile("r1", accessv1.PhaseActive)
	if f.pe.writes != writes {
		t.Errorf("converging wrote the policy again (%d writes, want %d)", f.pe.writes, writes)
	}

	// Two grants of one login: the first ending keeps the login.
	f.now = f.now.Add(30 * time.Minute)
	f.create("r2", "alice@example.com", time.Hour, "k8s:user:admin")
	f.mustReconcile("r2", accessv1.PhasePending)
	f.decide("r2", accessv1.ActionApprove)
	f.mustReconcile("r2", accessv1.PhaseActive)
	f.now = f.now.Add(30 * time.Minute)
	f.mustReconcile("r1", accessv1.PhaseExpired)
	if ms := f.pe.members(t); !slices.Equal(ms, []string{"alice@example.com"}) {
		t.Fatalf("after the first grant ended: members %v, want alice kept", ms)
	}
	// Operator down past the second's end: the first reconcile revokes it.
	f.now = f.now.Add(3 * time.Hour)
	f.mustReconcile("r2", accessv1.PhaseExpired)
	if ms := f.pe.members(t); len(ms) != 0 {
		t.Fatalf("after both ended: members %v", ms)
	}
	t.Logf("r2 history: %+v", f.get("r2").Status.History)
}

func keyOf(name string) types.NamespacedName { return types.NamespacedName{Name: name} }
