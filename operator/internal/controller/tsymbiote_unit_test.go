package controller_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
	"tsymbiote.dhouti.dev/operator/internal/controller"
	"tsymbiote.dhouti.dev/proto/contract"
)

const (
	tsNS      = "tsymbiote"
	tsName    = "webui"
	tsSecret  = "webui-auth"
	tsHost    = "debugger"
	tsRecheck = 5 * time.Minute
)

func unitTSymbiote() *v1alpha1.TSymbiote {
	return &v1alpha1.TSymbiote{
		ObjectMeta: metav1.ObjectMeta{Namespace: tsNS, Name: tsName, UID: "ts-uid", Generation: 1},
		Spec: v1alpha1.TSymbioteSpec{
			AuthSecretRef: corev1.LocalObjectReference{Name: tsSecret},
			Image:         "tsymbiote/webui:v1",
			Hostname:      tsHost,
			AllowedUsers:  []string{"alice@example.com"},
			Pod: &v1alpha1.PodOverrides{
				Labels:       map[string]string{"team": "net"},
				NodeSelector: map[string]string{"kubernetes.io/os": "linux"},
			},
		},
	}
}

func authSecret(data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: tsNS, Name: tsSecret}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

var oauthData = map[string]string{"TS_OAUTH_CLIENT_ID": "id", "TS_OAUTH_CLIENT_SECRET": "secret"}

// tsWorld is one TSymbiote's world: a fake API server and control plane,
// an event recorder, and the reconciler under test.
type tsWorld struct {
	t      *testing.T
	r      *controller.TSymbioteReconciler
	c      client.Client // the cluster as the test sees it, without faults
	cp     *fakeControlPlane
	events *record.FakeRecorder
	faults *faults
}

func newTSWorld(t *testing.T, objs ...client.Object) *tsWorld {
	t.Helper()
	w := &tsWorld{t: t, faults: &faults{}, events: record.NewFakeRecorder(100)}
	w.cp = newFakeControlPlane(time.Now)
	rc, direct := newFakeClient(t, w.faults, objs...)
	w.c = direct
	w.r = &controller.TSymbioteReconciler{
		Client: rc, APIReader: rc, ControlPlane: w.cp, Recheck: tsRecheck, Recorder: w.events,
	}
	return w
}

func (w *tsWorld) reconcile() (ctrl.Result, error) {
	return w.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: tsNS, Name: tsName}})
}

func (w *tsWorld) mustReconcile() ctrl.Result {
	w.t.Helper()
	res, err := w.reconcile()
	if err != nil {
		w.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

// tsym returns the stored TSymbiote, or nil when it is gone.
func (w *tsWorld) tsym() *v1alpha1.TSymbiote {
	w.t.Helper()
	t := &v1alpha1.TSymbiote{}
	err := w.c.Get(context.Background(), types.NamespacedName{Namespace: tsNS, Name: tsName}, t)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return t
}

// sts returns the stored StatefulSet, or nil when there is none.
func (w *tsWorld) sts() *appsv1.StatefulSet {
	w.t.Helper()
	s := &appsv1.StatefulSet{}
	err := w.c.Get(context.Background(), types.NamespacedName{Namespace: tsNS, Name: tsName}, s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// update changes the stored TSymbiote's spec the way a user would: the
// API server bumps the generation.
func (w *tsWorld) update(mutate func(*v1alpha1.TSymbiote)) {
	w.t.Helper()
	t := w.tsym()
	mutate(t)
	t.Generation++
	if err := w.c.Update(context.Background(), t); err != nil {
		w.t.Fatal(err)
	}
}

// markReady reports the StatefulSet's replica ready, as the StatefulSet
// controller and the kubelet would.
func (w *tsWorld) markReady() {
	w.t.Helper()
	s := w.sts()
	s.Status = appsv1.StatefulSetStatus{ObservedGeneration: s.Generation, Replicas: 1, ReadyReplicas: 1, UpdatedReplicas: 1}
	if err := w.c.Status().Update(context.Background(), s); err != nil {
		w.t.Fatal(err)
	}
}

// drainEvents returns the events recorded since the last call.
func (w *tsWorld) drainEvents() []string {
	var out []string
	for {
		select {
		case e := <-w.events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func readyOf(t *v1alpha1.TSymbiote) metav1.Condition {
	if c := apimeta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// TestTSymbioteUnit follows one TSymbiote from creation to deletion, one
// reconcile per step.
func TestTSymbioteUnit(t *testing.T) {
	w := newTSWorld(t, unitTSymbiote(), authSecret(oauthData))
	statusWrites := func() int { return w.faults.count(call{"status-update", "TSymbiote"}) }

	t.Run("the StatefulSet is made from the spec", func(t *testing.T) {
		if res := w.mustReconcile(); res.RequeueAfter != tsRecheck {
			t.Errorf("result %+v, want a recheck after %v", res, tsRecheck)
		}
		ts := w.tsym()
		if !slices.Contains(ts.Finalizers, controller.TSymbioteFinalizer) {
			t.Errorf("finalizers %v", ts.Finalizers)
		}
		sts := w.sts()
		if sts == nil {
			t.Fatal("no StatefulSet")
		}
		if !metav1.IsControlledBy(sts, ts) {
			t.Errorf("owners %+v", sts.OwnerReferences)
		}
		want := controller.WebUIStatefulSet(ts, sts.Spec.Template.Annotations[controller.AnnotationAuthHash])
		if sts.Spec.Template.Annotations[controller.AnnotationAuthHash] == "" {
			t.Error("no auth hash on the pod template")
		}
		c, wc := sts.Spec.Template.Spec.Containers[0], want.Spec.Template.Spec.Containers[0]
		if c.Image != "tsymbiote/webui:v1" || !slices.Equal(c.Args, wc.Args) || !slices.Equal(c.Args,
			[]string{"--hostname=" + tsHost, "--health-addr=:8081", "--generate-auth=true", "--allowed-users=alice@example.com"}) {
			t.Errorf("container image %s args %q", c.Image, c.Args)
		}
		// Restricted Pod Security: the WebUI needs no privilege, and its
		// readiness is the WebUI's own (it listens only on the tailnet).
		if sc := c.SecurityContext; sc == nil || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
			sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("security context %+v", sc)
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe == nil {
			t.Errorf("probes: readiness %+v, liveness %+v", c.ReadinessProbe, c.LivenessProbe)
		}
		if sts.Spec.Template.Labels["team"] != "net" || sts.Spec.Template.Spec.NodeSelector["kubernetes.io/os"] != "linux" {
			t.Errorf("pod overrides lost: %+v", sts.Spec.Template)
		}
		if sts.Labels[contract.LabelManagedBy] != controller.ManagedByValue {
			t.Errorf("labels %v", sts.Labels)
		}
		cond := readyOf(ts)
		if cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonProgressing || cond.ObservedGeneration != 1 {
			t.Errorf("ready condition %+v, want Progressing for generation 1", cond)
		}
		if ts.Status.ObservedGeneration != 1 || ts.Status.Hostname != tsHost || ts.Status.StatefulSetName != tsName {
			t.Errorf("status %+v", ts.Status)
		}
		if ev := w.drainEvents(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Normal Progressing") {
			t.Errorf("events %q, want one Normal Progressing", ev)
		}
	})
	t.Run("nothing new: no status write, no event", func(t *testing.T) {
		before, rv := statusWrites(), w.tsym().ResourceVersion
		w.mustReconcile()
		if n := statusWrites() - before; n != 0 || w.tsym().ResourceVersion != rv {
			t.Errorf("%d status writes, resourceVersion %s -> %s", n, rv, w.tsym().ResourceVersion)
		}
		if ev := w.drainEvents(); len(ev) != 0 {
			t.Errorf("events %q", ev)
		}
	})
	t.Run("a ready replica makes it Ready", func(t *testing.T) {
		w.markReady()
		w.mustReconcile()
		ts := w.tsym()
		if cond := readyOf(ts); cond.Status != metav1.ConditionTrue || ts.Status.ReadyReplicas != 1 {
			t.Errorf("ready condition %+v, readyReplicas %d", cond, ts.Status.ReadyReplicas)
		}
		if ev := w.drainEvents(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Normal Ready") {
			t.Errorf("events %q, want one Normal Ready", ev)
		}
	})
	t.Run("a spec change updates the StatefulSet", func(t *testing.T) {
		w.update(func(ts *v1alpha1.TSymbiote) { ts.Spec.Image = "tsymbiote/webui:v2" })
		w.mustReconcile()
		if img := w.sts().Spec.Template.Spec.Containers[0].Image; img != "tsymbiote/webui:v2" {
			t.Errorf("image %s", img)
		}
		if ts := w.tsym(); ts.Status.ObservedGeneration != 2 || readyOf(ts).ObservedGeneration != 2 {
			t.Errorf("status %+v, want generation 2 observed", ts.Status)
		}
	})
	t.Run("new credentials roll the WebUI", func(t *testing.T) {
		before := w.sts().Spec.Template.Annotations[controller.AnnotationAuthHash]
		s := authSecret(oauthData)
		s.Data["TS_OAUTH_CLIENT_SECRET"] = []byte("rotated")
		if err := w.c.Update(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		w.mustReconcile()
		if after := w.sts().Spec.Template.Annotations[controller.AnnotationAuthHash]; after == before {
			t.Errorf("auth hash %s unchanged", after)
		}
	})
	t.Run("deletion deletes the WebUI's node and nothing else", func(t *testing.T) {
		w.cp.register("webui-node", tsHost, contract.TagWebUI)
		w.cp.register("other-webui", "other", contract.TagWebUI)
		w.cp.register("adapter", tsHost, contract.TagAdapter)
		if err := w.c.Delete(context.Background(), w.tsym()); err != nil {
			t.Fatal(err)
		}
		w.cp.failNext("DeleteDevice", 1, errors.New("control plane down"))
		if _, err := w.reconcile(); err == nil {
			t.Error("Reconcile succeeded with the control plane down")
		}
		if ts := w.tsym(); ts == nil || !slices.Contains(ts.Finalizers, controller.TSymbioteFinalizer) {
			t.Fatalf("released before its node was deleted: %+v", ts)
		}
		if res := w.mustReconcile(); res != (ctrl.Result{}) {
			t.Errorf("result %+v", res)
		}
		if ids := w.cp.deviceIDs(); !slices.Equal(ids, []string{"other-webui", "adapter"}) {
			t.Errorf("devices left %v", ids)
		}
		if w.tsym() != nil {
			t.Error("TSymbiote not released")
		}
		w.mustReconcile() // gone: nothing to do
	})
}

// TestTSymbioteBadSpec shows what the schema cannot check reported as a
// condition and a Warning Event, once, and no StatefulSet made.
func TestTSymbioteBadSpec(t *testing.T) {
	for _, tc := range []struct {
		name       string
		secret     *corev1.Secret // nil: none
		mutate     func(*v1alpha1.TSymbiote)
		wantReason string
		wantMsg    string
	}{
		{"no auth Secret", nil, nil, v1alpha1.ReasonAuthSecretMissing, `secret "webui-auth" not found`},
		{"empty auth Secret", authSecret(nil), nil, v1alpha1.ReasonAuthSecretInvalid,
			"must hold TS_OAUTH_CLIENT_ID+TS_OAUTH_CLIENT_SECRET, or TS_API_KEY, or HEADSCALE_URL+HEADSCALE_API_KEY"},
		{"half an OAuth client", authSecret(map[string]string{"TS_OAUTH_CLIENT_ID": "id"}), nil, v1alpha1.ReasonAuthSecretInvalid, "TS_OAUTH_CLIENT_SECRET"},
		{"an auth key where generateAuth needs a client", authSecret(map[string]string{"TS_AUTHKEY": "k"}), nil, v1alpha1.ReasonAuthSecretInvalid, "TS_API_KEY"},
		{"a client where an auth key is needed", authSecret(oauthData),
			func(ts *v1alpha1.TSymbiote) { ts.Spec.GenerateAuth = ptr.To(false) }, v1alpha1.ReasonAuthSecretInvalid, "must hold TS_AUTHKEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := unitTSymbiote()
			if tc.mutate != nil {
				tc.mutate(ts)
			}
			objs := []client.Object{ts}
			if tc.secret != nil {
				objs = append(objs, tc.secret)
			}
			w := newTSWorld(t, objs...)
			if res := w.mustReconcile(); res.RequeueAfter != 30*time.Second {
				t.Errorf("result %+v, want the auth Secret re-read in 30s", res)
			}
			cond := readyOf(w.tsym())
			if cond.Status != metav1.ConditionFalse || cond.Reason != tc.wantReason || !strings.Contains(cond.Message, tc.wantMsg) {
				t.Errorf("ready condition %+v, want %s naming %q", cond, tc.wantReason, tc.wantMsg)
			}
			if ev := w.drainEvents(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning "+tc.wantReason) {
				t.Errorf("events %q, want one Warning %s", ev, tc.wantReason)
			}
			if w.sts() != nil {
				t.Error("StatefulSet made without usable credentials")
			}
			writes := w.faults.count(call{"status-update", "TSymbiote"})
			w.mustReconcile()
			if n := w.faults.count(call{"status-update", "TSymbiote"}) - writes; n != 0 {
				t.Errorf("%d status writes for the same problem", n)
			}
			if ev := w.drainEvents(); len(ev) != 0 {
				t.Errorf("repeated events %q", ev)
			}
		})
	}
	t.Run("the fix is picked up", func(t *testing.T) {
		w := newTSWorld(t, unitTSymbiote())
		w.mustReconcile()
		if err := w.c.Create(context.Background(), authSecret(oauthData)); err != nil {
			t.Fatal(err)
		}
		w.mustReconcile()
		if cond := readyOf(w.tsym()); cond.Reason != v1alpha1.ReasonProgressing || w.sts() == nil {
			t.Errorf("ready condition %+v after the Secret appeared", cond)
		}
	})
	t.Run("apply refused: ProvisionFailed", func(t *testing.T) {
		w := newTSWorld(t, unitTSymbiote(), authSecret(oauthData))
		w.faults.once(call{"apply", "StatefulSet"}, failBefore)
		if _, err := w.reconcile(); err == nil {
			t.Error("Reconcile succeeded")
		}
		if cond := readyOf(w.tsym()); cond.Reason != v1alpha1.ReasonProvisionFailed || !strings.Contains(cond.Message, "injected fault") {
			t.Errorf("ready condition %+v", cond)
		}
		if ev := w.drainEvents(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning "+v1alpha1.ReasonProvisionFailed) {
			t.Errorf("events %q", ev)
		}
	})
	t.Run("deletion without a control plane", func(t *testing.T) {
		w := newTSWorld(t, unitTSymbiote(), authSecret(oauthData))
		w.r.ControlPlane = nil
		w.mustReconcile()
		if err := w.c.Delete(context.Background(), w.tsym()); err != nil {
			t.Fatal(err)
		}
		w.mustReconcile()
		if w.tsym() != nil {
			t.Error("TSymbiote not released")
		}
	})
}

// tsState is what must be the same however a TSymbiote's reconciles were
// interrupted.
func (w *tsWorld) state() string {
	w.t.Helper()
	var b strings.Builder
	if ts := w.tsym(); ts != nil {
		c := readyOf(ts)
		fmt.Fprintf(&b, "tsymbiote finalizers=%v observed=%d ready=%s/%s/%q/%d replicas=%d; ",
			ts.Finalizers, ts.Status.ObservedGeneration, c.Status, c.Reason, c.Message, c.ObservedGeneration, ts.Status.ReadyReplicas)
	}
	if s := w.sts(); s != nil {
		c := s.Spec.Template.Spec.Containers[0]
		fmt.Fprintf(&b, "sts image=%s args=%q hash=%s owners=%d; ", c.Image, c.Args,
			s.Spec.Template.Annotations[controller.AnnotationAuthHash], len(s.OwnerReferences))
	}
	fmt.Fprintf(&b, "devices=%v", w.cp.deviceIDs())
	return b.String()
}

// TestTSymbioteConverges fails each call of a TSymbiote's life once,
// before or after it takes effect, and checks that the next reconciles
// reach the same state as a run without faults at the end of every phase.
func TestTSymbioteConverges(t *testing.T) {
	phases := []convergencePhase[*tsWorld]{
		{"create", func(w *tsWorld) {}},
		{"ready", func(w *tsWorld) { w.markReady() }},
		{"spec change", func(w *tsWorld) {
			w.update(func(ts *v1alpha1.TSymbiote) { ts.Spec.AllowedUsers = append(ts.Spec.AllowedUsers, "bob@example.com") })
		}},
		{"delete", func(w *tsWorld) {
			w.cp.register("webui-node", tsHost, contract.TagWebUI)
			if err := w.c.Delete(context.Background(), w.tsym()); err != nil {
				w.t.Fatal(err)
			}
		}},
	}
	start := func(t *testing.T) *tsWorld {
		w := newTSWorld(t, unitTSymbiote(), authSecret(oauthData))
		w.cp.faults = w.faults
		return w
	}
	checkConverges(t, phases, start, nil)
}

func (w *tsWorld) injectedFaults() *faults { return w.faults }

// TestWebUIAccessFlag: spec.access is what turns on the WebUI's Access page,
// and only it.
func TestWebUIAccessFlag(t *testing.T) {
	for _, access := range []bool{false, true} {
		ts := &v1alpha1.TSymbiote{}
		ts.Name, ts.Namespace = "debugger", "tsymbiote"
		ts.Spec.Image = "tsymbiote/webui:v1"
		ts.Spec.Access = access
		args := controller.WebUIStatefulSet(ts, "").Spec.Template.Spec.Containers[0].Args
		if got := slices.Contains(args, "--access"); got != access {
			t.Errorf("spec.access %v: args %q", access, args)
		}
	}
}
