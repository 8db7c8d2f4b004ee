package controller_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"tsymbiote.dhouti.dev/operator/internal/controller"
	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	"tsymbiote.dhouti.dev/proto/contract"
)

const (
	unitNS      = "apps"
	unitPod     = "web-0"
	unitExpiry  = time.Hour
	unitPoll    = 30 * time.Second
	unitGiveUp  = 10 * time.Minute
	unitPodUID  = types.UID("pod-uid-1")
	unitAdapter = "web-0"
)

var unitSecret = sidecar.SecretName(unitPod)

// injectedPod is a pod as the webhook leaves it: labelled, annotated with
// its Secret and adapter hostname, holding the finalizer.
func injectedPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: unitNS, Name: unitPod, UID: unitPodUID,
			Labels: map[string]string{contract.LabelSecretInjection: contract.InjectionEnabled},
			Annotations: map[string]string{
				sidecar.AnnotationInjected: unitSecret,
				sidecar.AnnotationHostname: unitAdapter,
			},
			Finalizers: []string{sidecar.Finalizer},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

// podKeyWorld is one pod's world: a fake API server, a fake control plane
// and a fake clock, and the reconciler under test.
type podKeyWorld struct {
	t      *testing.T
	r      *controller.PodKeyReconciler
	c      client.Client // the cluster as the test sees it, without faults
	cp     *fakeControlPlane
	clock  *fakeClock
	faults *faults
}

func newPodKeyWorld(t *testing.T, objs ...client.Object) *podKeyWorld {
	t.Helper()
	w := &podKeyWorld{t: t, clock: newFakeClock(), faults: &faults{}}
	w.cp = newFakeControlPlane(w.clock.Now)
	rc, direct := newFakeClient(t, w.faults, objs...)
	w.c = direct
	w.r = &controller.PodKeyReconciler{
		Client: rc, ControlPlane: w.cp,
		KeyExpiry: unitExpiry, Poll: unitPoll, GiveUpAfter: unitGiveUp, Now: w.clock.Now,
	}
	return w
}

func (w *podKeyWorld) reconcile() (ctrl.Result, error) {
	w.t.Helper()
	return w.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: unitNS, Name: unitPod}})
}

// mustReconcile reconciles once and fails the test on an error.
func (w *podKeyWorld) mustReconcile() ctrl.Result {
	w.t.Helper()
	res, err := w.reconcile()
	if err != nil {
		w.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

// pod returns the stored pod, or nil when it is gone.
func (w *podKeyWorld) pod() *corev1.Pod {
	w.t.Helper()
	p := &corev1.Pod{}
	err := w.c.Get(context.Background(), types.NamespacedName{Namespace: unitNS, Name: unitPod}, p)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return p
}

// secret returns the stored key Secret, or nil when there is none.
func (w *podKeyWorld) secret() *corev1.Secret {
	w.t.Helper()
	s := &corev1.Secret{}
	err := w.c.Get(context.Background(), types.NamespacedName{Namespace: unitNS, Name: unitSecret}, s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// deletePod deletes the pod the way the API server does while a finalizer
// holds it: it gets a deletion timestamp and stays.
func (w *podKeyWorld) deletePod() {
	w.t.Helper()
	if err := w.c.Delete(context.Background(), injectedPod()); err != nil {
		w.t.Fatal(err)
	}
}

// TestPodKeyMint checks the Secret a fresh injected pod gets: a single-use,
// ephemeral, preauthorized key tagged for adapters, owned by the pod so
// that the garbage collector removes it with the pod.
func TestPodKeyMint(t *testing.T) {
	w := newPodKeyWorld(t, injectedPod())
	if res := w.mustReconcile(); res.RequeueAfter != unitPoll {
		t.Errorf("result %+v, want a requeue after the poll interval %v", res, unitPoll)
	}
	s := w.secret()
	if s == nil {
		t.Fatal("no Secret")
	}
	if !metav1.IsControlledBy(s, injectedPod()) {
		t.Errorf("owners %+v, want the pod %s as controller", s.OwnerReferences, unitPodUID)
	}
	if ref := metav1.GetControllerOf(s); ref != nil && (ref.BlockOwnerDeletion == nil || *ref.BlockOwnerDeletion) {
		t.Errorf("owner reference blocks the pod's deletion: %+v", ref)
	}
	if s.Labels[contract.LabelManagedBy] != controller.ManagedByValue {
		t.Errorf("labels %v, want %s=%s (the manager's cache sees only those)", s.Labels, contract.LabelManagedBy, controller.ManagedByValue)
	}
	wantAnn := map[string]string{
		controller.AnnotationExpires: w.clock.Now().Add(unitExpiry).Format(time.RFC3339),
		controller.AnnotationKeyID:   "key-1",
		controller.AnnotationPodUID:  string(unitPodUID),
	}
	if !maps.Equal(s.Annotations, wantAnn) {
		t.Errorf("annotations %v, want %v", s.Annotations, wantAnn)
	}
	if got := string(s.Data[sidecar.SecretKeyAuthKey]); got != "tskey-auth-1" {
		t.Errorf("%s = %q", sidecar.SecretKeyAuthKey, got)
	}
	if got := string(s.Data[sidecar.SecretKeyControlURL]); got != w.cp.ControlURL() {
		t.Errorf("%s = %q, want %q", sidecar.SecretKeyControlURL, got, w.cp.ControlURL())
	}
	req := w.cp.keys[0]
	if !slices.Equal(req.Tags, []string{contract.TagAdapter}) || !req.Ephemeral || !req.Preauthorized || req.Reusable || req.Expiry != unitExpiry {
		t.Errorf("key request %+v, want a single-use ephemeral preauthorized %s key for %v", req, contract.TagAdapter, unitExpiry)
	}
}

// TestPodKeyLifecycle walks one pod through its life, one reconcile per
// step, with the clock and the control plane moved by the test.
func TestPodKeyLifecycle(t *testing.T) {
	w := newPodKeyWorld(t, injectedPod())
	w.mustReconcile()
	first := w.secret()

	t.Run("a fresh key is left alone", func(t *testing.T) {
		w.clock.Advance(10 * time.Minute)
		if res := w.mustReconcile(); res.RequeueAfter != unitPoll {
			t.Errorf("result %+v, want a poll", res)
		}
		if n := w.cp.minted(); n != 1 {
			t.Errorf("%d keys minted, want 1", n)
		}
	})
	t.Run("the poll never overshoots the renewal time", func(t *testing.T) {
		// 10s before the last quarter of the key's life.
		expires, _ := time.Parse(time.RFC3339, first.Annotations[controller.AnnotationExpires])
		w.clock.Set(expires.Add(-unitExpiry/4 - 10*time.Second))
		if res := w.mustReconcile(); res.RequeueAfter != 10*time.Second {
			t.Errorf("result %+v, want a requeue in 10s", res)
		}
	})
	t.Run("an unused key is re-minted in the last quarter of its life", func(t *testing.T) {
		w.clock.Advance(11 * time.Second)
		if res := w.mustReconcile(); res.RequeueAfter != unitPoll {
			t.Errorf("result %+v, want a poll", res)
		}
		s := w.secret()
		if s.UID != first.UID || s.Annotations[controller.AnnotationKeyID] != "key-2" || string(s.Data[sidecar.SecretKeyAuthKey]) != "tskey-auth-2" {
			t.Errorf("secret uid %s key %s, want the same Secret (%s) with key-2", s.UID, s.Annotations[controller.AnnotationKeyID], first.UID)
		}
		if !metav1.IsControlledBy(s, injectedPod()) || s.Annotations[controller.AnnotationPodUID] != string(unitPodUID) {
			t.Errorf("renewal lost the owner or pod UID: %+v", s.ObjectMeta)
		}
	})
	t.Run("a failed renewal keeps the old key", func(t *testing.T) {
		w.clock.Advance(unitExpiry)
		w.cp.failNext("CreateAuthKey", 1, errors.New("control plane down"))
		if _, err := w.reconcile(); err == nil {
			t.Fatal("Reconcile succeeded with the control plane down")
		}
		if s := w.secret(); s.Annotations[controller.AnnotationKeyID] != "key-2" {
			t.Errorf("key %s, want key-2 kept", s.Annotations[controller.AnnotationKeyID])
		}
		w.mustReconcile()
		if s := w.secret(); s.Annotations[controller.AnnotationKeyID] != "key-3" {
			t.Errorf("key %s after the control plane came back, want key-3", s.Annotations[controller.AnnotationKeyID])
		}
	})
	t.Run("the node is recorded once it registers", func(t *testing.T) {
		w.cp.register("node-1", unitAdapter, contract.TagAdapter)
		w.cp.register("node-other", "other", contract.TagAdapter)
		if res := w.mustReconcile(); res != (ctrl.Result{}) {
			t.Errorf("result %+v, want done", res)
		}
		if got := w.secret().Annotations[controller.AnnotationNodeID]; got != "node-1" {
			t.Errorf("node id %q, want node-1", got)
		}
		// Done: later reconciles neither mint nor ask the control plane.
		w.clock.Advance(unitExpiry)
		w.cp.failNext("ListDevices", -1, errors.New("must not be called"))
		if res := w.mustReconcile(); res != (ctrl.Result{}) {
			t.Errorf("result %+v, want done", res)
		}
		w.cp.failNext("ListDevices", 0, nil)
	})
	t.Run("deletion deletes the recorded node and releases the pod", func(t *testing.T) {
		w.deletePod()
		if p := w.pod(); p == nil || p.DeletionTimestamp.IsZero() {
			t.Fatalf("pod %+v, want it held by the finalizer", p)
		}
		if res := w.mustReconcile(); res != (ctrl.Result{}) {
			t.Errorf("result %+v, want done", res)
		}
		if ids := w.cp.deviceIDs(); !slices.Equal(ids, []string{"node-other"}) {
			t.Errorf("devices left %v, want only node-other", ids)
		}
		if p := w.pod(); p != nil {
			t.Errorf("pod still there with finalizers %v", p.Finalizers)
		}
		// The Secret goes with the pod through the garbage collector
		// (TestPodKeys sees it happen); here the owner reference says so.
		if s := w.secret(); s == nil || !metav1.IsControlledBy(s, injectedPod()) {
			t.Errorf("secret %+v is not owned by the pod", s)
		}
		if res := w.mustReconcile(); res != (ctrl.Result{}) {
			t.Errorf("reconcile of the gone pod: %+v", res)
		}
	})
}

// TestPodKeyBranches covers the branches one reconcile can take from a
// given state.
func TestPodKeyBranches(t *testing.T) {
	downErr := errors.New("control plane down")
	otherPodsSecret := func() *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Namespace: unitNS, Name: unitSecret, UID: "old-secret",
			Labels: map[string]string{contract.LabelManagedBy: controller.ManagedByValue},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: unitPod, UID: "earlier-pod", Controller: ptr.To(true),
			}},
		}}
	}
	for _, tc := range []struct {
		name  string
		objs  func() []client.Object
		setup func(w *podKeyWorld)
		// wantErr says whether Reconcile returns an error (a retry with
		// backoff); wantRes is its result otherwise.
		wantErr bool
		wantRes ctrl.Result
		check   func(t *testing.T, w *podKeyWorld)
	}{
		{
			name:    "pod gone",
			objs:    func() []client.Object { return nil },
			wantRes: ctrl.Result{},
			check: func(t *testing.T, w *podKeyWorld) {
				if w.secret() != nil || w.cp.minted() != 0 {
					t.Error("acted on a pod that does not exist")
				}
			},
		},
		{
			name: "pod not injected is skipped",
			objs: func() []client.Object {
				p := injectedPod()
				p.Annotations, p.Finalizers = nil, nil
				return []client.Object{p}
			},
			check: func(t *testing.T, w *podKeyWorld) {
				if w.secret() != nil || w.cp.minted() != 0 || len(w.pod().Finalizers) != 0 {
					t.Error("acted on a pod the webhook did not inject")
				}
			},
		},
		{
			name: "missing finalizer is added",
			objs: func() []client.Object {
				p := injectedPod()
				p.Finalizers = nil
				return []client.Object{p}
			},
			wantRes: ctrl.Result{RequeueAfter: unitPoll},
			check: func(t *testing.T, w *podKeyWorld) {
				if f := w.pod().Finalizers; !slices.Equal(f, []string{sidecar.Finalizer}) {
					t.Errorf("finalizers %v", f)
				}
				if w.secret() == nil {
					t.Error("no Secret")
				}
			},
		},
		{
			name:    "control plane down: no Secret, retried",
			objs:    func() []client.Object { return []client.Object{injectedPod()} },
			setup:   func(w *podKeyWorld) { w.cp.failNext("CreateAuthKey", -1, downErr) },
			wantErr: true,
			check: func(t *testing.T, w *podKeyWorld) {
				if w.secret() != nil {
					t.Error("a Secret without a key was written")
				}
				if f := w.pod().Finalizers; !slices.Equal(f, []string{sidecar.Finalizer}) {
					t.Errorf("finalizers %v", f)
				}
			},
		},
		{
			name:    "Secret of an earlier pod with the same name is replaced",
			objs:    func() []client.Object { return []client.Object{injectedPod(), otherPodsSecret()} },
			wantRes: ctrl.Result{RequeueAfter: time.Second},
			check: func(t *testing.T, w *podKeyWorld) {
				if s := w.secret(); s != nil {
					t.Errorf("stale Secret %s kept", s.UID)
				}
				if w.cp.minted() != 0 {
					t.Error("minted before the stale Secret was gone")
				}
				w.mustReconcile()
				if s := w.secret(); s == nil || !metav1.IsControlledBy(s, injectedPod()) {
					t.Errorf("no Secret of the pod's own after the retry: %+v", s)
				}
			},
		},
		{
			name:    "conflict is a quiet, quick retry",
			objs:    func() []client.Object { p := injectedPod(); p.Finalizers = nil; return []client.Object{p} },
			setup:   func(w *podKeyWorld) { w.faults.once(call{"patch", "Pod"}, conflictBefore) },
			wantRes: ctrl.Result{RequeueAfter: 200 * time.Millisecond},
			check: func(t *testing.T, w *podKeyWorld) {
				if w.secret() != nil || len(w.pod().Finalizers) != 0 {
					t.Error("went on after losing the race")
				}
			},
		},
		{
			name: "listing nodes fails: the pod is polled again",
			objs: func() []client.Object { return []client.Object{injectedPod()} },
			setup: func(w *podKeyWorld) {
				w.mustReconcile()
				w.cp.failNext("ListDevices", 1, downErr)
			},
			wantErr: true,
			check: func(t *testing.T, w *podKeyWorld) {
				if s := w.secret(); s == nil || s.Annotations[controller.AnnotationKeyID] != "key-1" {
					t.Errorf("secret %+v, want key-1 kept", s)
				}
			},
		},
		{
			name: "deleted pod without a recorded node: nodes found by hostname",
			objs: func() []client.Object { return []client.Object{injectedPod()} },
			setup: func(w *podKeyWorld) {
				w.mustReconcile()
				// The adapter joined after the last reconcile, twice
				// (a restart before its first node was removed).
				w.cp.register("node-a", unitAdapter, contract.TagAdapter)
				w.cp.register("node-b", unitAdapter, contract.TagAdapter)
				w.cp.register("webui", unitAdapter, contract.TagWebUI)
				w.deletePod()
			},
			check: func(t *testing.T, w *podKeyWorld) {
				if ids := w.cp.deviceIDs(); !slices.Equal(ids, []string{"webui"}) {
					t.Errorf("devices left %v, want only the WebUI's", ids)
				}
				if w.pod() != nil {
					t.Error("pod not released")
				}
			},
		},
		{
			name: "deleted pod whose node is already gone is released",
			objs: func() []client.Object { return []client.Object{injectedPod()} },
			setup: func(w *podKeyWorld) {
				w.cp.register("node-1", unitAdapter, contract.TagAdapter)
				w.mustReconcile()
				w.mustReconcile() // records node-1
				if err := w.cp.DeleteDevice(context.Background(), "node-1"); err != nil {
					t.Fatal(err)
				}
				w.deletePod()
			},
			check: func(t *testing.T, w *podKeyWorld) {
				if w.pod() != nil {
					t.Error("pod not released")
				}
			},
		},
		{
			name: "deleted pod, control plane down: held",
			objs: func() []client.Object { return []client.Object{injectedPod()} },
			setup: func(w *podKeyWorld) {
				w.cp.register("node-1", unitAdapter, contract.TagAdapter)
				w.deletePod()
				w.clock.Set(w.pod().DeletionTimestamp.Add(unitGiveUp - time.Second))
				w.cp.failNext("DeleteDevice", -1, downErr)
			},
			wantErr: true,
			check: func(t *testing.T, w *podKeyWorld) {
				if p := w.pod(); p == nil || !slices.Contains(p.Finalizers, sidecar.Finalizer) {
					t.Errorf("pod released while its node could still be deleted: %+v", p)
				}
			},
		},
		{
			name: "deleted pod, control plane down for good: released after the give-up time",
			objs: func() []client.Object { return []client.Object{injectedPod()} },
			setup: func(w *podKeyWorld) {
				w.cp.register("node-1", unitAdapter, contract.TagAdapter)
				w.deletePod()
				w.clock.Set(w.pod().DeletionTimestamp.Add(unitGiveUp + time.Second))
				w.cp.failNext("DeleteDevice", -1, downErr)
			},
			check: func(t *testing.T, w *podKeyWorld) {
				if w.pod() != nil {
					t.Error("pod still held")
				}
				if ids := w.cp.deviceIDs(); !slices.Equal(ids, []string{"node-1"}) {
					t.Errorf("devices %v", ids)
				}
			},
		},
		{
			name: "deleted pod without our finalizer is left alone",
			objs: func() []client.Object {
				p := injectedPod()
				p.Finalizers = []string{"someone.else/hold"}
				return []client.Object{p}
			},
			setup: func(w *podKeyWorld) {
				w.cp.register("node-1", unitAdapter, contract.TagAdapter)
				w.deletePod()
			},
			check: func(t *testing.T, w *podKeyWorld) {
				if p := w.pod(); p == nil || !slices.Equal(p.Finalizers, []string{"someone.else/hold"}) {
					t.Errorf("pod %+v", p)
				}
				if len(w.cp.deviceIDs()) != 1 {
					t.Error("deleted a node of a pod it does not hold")
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newPodKeyWorld(t, tc.objs()...)
			if tc.setup != nil {
				tc.setup(w)
			}
			res, err := w.reconcile()
			if tc.wantErr != (err != nil) || (err == nil && res != tc.wantRes) {
				t.Errorf("Reconcile = %+v, %v; want %+v, error %v", res, err, tc.wantRes, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, w)
			}
		})
	}
}

// podKeyState is what must be the same however a pod's reconciles were
// interrupted: which key was minted is not (a key minted by a reconcile
// that died is never stored), that the pod has one is.
type podKeyState struct {
	PodExists, PodHeld, SecretExists, SecretOwned, HasKey bool
	NodeID                                                string
	Devices                                               string
}

func (w *podKeyWorld) state() podKeyState {
	w.t.Helper()
	var st podKeyState
	if p := w.pod(); p != nil {
		st.PodExists, st.PodHeld = true, slices.Contains(p.Finalizers, sidecar.Finalizer)
	}
	if s := w.secret(); s != nil {
		st.SecretExists = true
		st.SecretOwned = metav1.IsControlledBy(s, injectedPod()) && s.Labels[contract.LabelManagedBy] == controller.ManagedByValue
		st.HasKey = len(s.Data[sidecar.SecretKeyAuthKey]) > 0 && s.Annotations[controller.AnnotationKeyID] != ""
		st.NodeID = s.Annotations[controller.AnnotationNodeID]
	}
	st.Devices = strings.Join(w.cp.deviceIDs(), ",")
	return st
}

// TestPodKeyConverges fails each API and control plane call of a pod's
// life once, before or after it takes effect, as if the controller died
// there, and checks that the next reconciles reach the same state as a
// run without faults, at the end of every phase.
func TestPodKeyConverges(t *testing.T) {
	phases := []convergencePhase[*podKeyWorld]{
		{"mint", func(w *podKeyWorld) {}},
		{"renew", func(w *podKeyWorld) { w.clock.Advance(unitExpiry) }},
		{"register", func(w *podKeyWorld) { w.cp.register("node-1", unitAdapter, contract.TagAdapter) }},
		{"delete", func(w *podKeyWorld) { w.deletePod() }},
	}
	start := func(t *testing.T) *podKeyWorld {
		p := injectedPod()
		p.Finalizers = nil // so that adding it is a step too
		w := newPodKeyWorld(t, p)
		w.cp.faults = w.faults
		return w
	}
	checkConverges(t, phases, start, nil)
}

func (w *podKeyWorld) injectedFaults() *faults { return w.faults }
