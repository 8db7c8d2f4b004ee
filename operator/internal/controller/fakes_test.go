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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	clientgoapplyconfigurations "k8s.io/client-go/applyconfigurations"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
	"tsymbiote.dhouti.dev/operator/internal/setup"
)

// fakeControlPlane is an in-memory controlplane.Client: devices the test
// registers, keys it mints with sequential IDs, and errors injected per
// operation. It is safe for concurrent use.
type fakeControlPlane struct {
	now    func() time.Time
	faults *faults // when set, every call goes through it as call{"cp", method}

	mu      sync.Mutex
	devices []controlplane.Device
	keys    []controlplane.AuthKeyRequest // every mint, in order
	deleted []string                      // device IDs, in order
	fail    map[string]error              // by method name; see failNext
	failN   map[string]int                // calls left to fail; <0 for always
}

var _ controlplane.Client = (*fakeControlPlane)(nil)

func newFakeControlPlane(now func() time.Time) *fakeControlPlane {
	return &fakeControlPlane{now: now, fail: map[string]error{}, failN: map[string]int{}}
}

// failNext makes the next n calls of method (CreateAuthKey, ListDevices,
// DeleteDevice) fail with err; n < 0 fails every call until cleared with
// n == 0.
func (f *fakeControlPlane) failNext(method string, n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method], f.failN[method] = err, n
}

// injected returns the error method should fail with, if any. f.mu is held.
func (f *fakeControlPlane) injected(method string) error {
	n := f.failN[method]
	if n == 0 {
		return nil
	}
	if n > 0 {
		f.failN[method] = n - 1
	}
	return fmt.Errorf("fake %s: %w", method, f.fail[method])
}

// register adds a device as if a node had joined with hostname and tag.
func (f *fakeControlPlane) register(id, hostname, tag string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.devices = append(f.devices, controlplane.Device{ID: id, Name: hostname, Hostname: hostname, Tags: []string{tag}, Ephemeral: true})
}

func (f *fakeControlPlane) deviceIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, d := range f.devices {
		ids = append(ids, d.ID)
	}
	return ids
}

func (f *fakeControlPlane) minted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.keys)
}

func (f *fakeControlPlane) Backend() string                  { return "fake" }
func (f *fakeControlPlane) ControlURL() string               { return "https://control.test" }
func (f *fakeControlPlane) Verify(ctx context.Context) error { return nil }

// fault runs op as the control plane call method, through the test's
// faults when it has any.
func (f *fakeControlPlane) fault(method string, op func() error) error {
	if f.faults == nil {
		return op()
	}
	return f.faults.do(call{"cp", method}, "", op)
}

func (f *fakeControlPlane) ListDevices(ctx context.Context, opts controlplane.ListOptions) (out []controlplane.Device, err error) {
	err = f.fault("ListDevices", func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := f.injected("ListDevices"); err != nil {
			return err
		}
		for _, d := range f.devices {
			if opts.Tag == "" || d.HasTag(opts.Tag) {
				out = append(out, d)
			}
		}
		return nil
	})
	return out, err
}

func (f *fakeControlPlane) CreateAuthKey(ctx context.Context, req controlplane.AuthKeyRequest) (key *controlplane.AuthKey, err error) {
	err = f.fault("CreateAuthKey", func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := f.injected("CreateAuthKey"); err != nil {
			return err
		}
		f.keys = append(f.keys, req)
		n := len(f.keys)
		key = &controlplane.AuthKey{
			ID:      fmt.Sprintf("key-%d", n),
			Key:     controlplane.Secret(fmt.Sprintf("tskey-auth-%d", n)),
			Expires: f.now().Add(req.Expiry),
			Tags:    slices.Clone(req.Tags),
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

func (f *fakeControlPlane) DeleteDevice(ctx context.Context, id string) error {
	return f.fault("DeleteDevice", func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := f.injected("DeleteDevice"); err != nil {
			return err
		}
		i := slices.IndexFunc(f.devices, func(d controlplane.Device) bool { return d.ID == id })
		if i < 0 {
			return fmt.Errorf("device %s: %w", id, controlplane.ErrNotFound)
		}
		f.devices = slices.Delete(f.devices, i, i+1)
		f.deleted = append(f.deleted, id)
		return nil
	})
}

func (f *fakeControlPlane) GetPolicy(ctx context.Context) (*controlplane.Policy, error) {
	return nil, errors.New("fake control plane: no policy")
}

func (f *fakeControlPlane) SetPolicy(ctx context.Context, body, version string) (*controlplane.Policy, error) {
	return nil, errors.New("fake control plane: no policy")
}

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// call names one kind of API call a reconciler makes: a verb ("get",
// "create", "patch", "update", "delete", "apply", "status-update") on a
// kind ("Pod", "Secret", "TSymbiote", "StatefulSet").
type call struct{ verb, kind string }

func (c call) String() string { return c.verb + " " + c.kind }

// faultMode says how an injected fault shows itself.
type faultMode int

const (
	// failBefore fails the call without performing it: the request never
	// reached the API server.
	failBefore faultMode = iota
	// failAfter performs the call, then fails it: the write happened but
	// the controller never learnt so (it died, or the response was lost).
	failAfter
	// conflictBefore fails the call with an optimistic-lock conflict.
	conflictBefore
)

func (m faultMode) String() string {
	return [...]string{"fail before", "fail after", "conflict"}[m]
}

// faults injects one fault into an API call and records every call made;
// it is the interceptor of the fake clients below and, optionally, of the
// fake control plane. It is safe for concurrent use.
type faults struct {
	scheme *runtime.Scheme

	mu    sync.Mutex
	armed bool
	match *call // when set, the first call like this one fails
	at    int   // else the call with this index in calls fails
	mode  faultMode
	calls []call
	fired bool
}

// once arms a single fault on the next c.
func (fl *faults) once(c call, mode faultMode) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.armed, fl.match, fl.mode, fl.fired = true, &c, mode, false
}

// nth arms a single fault on the call with index i in the recorded calls.
func (fl *faults) nth(i int, mode faultMode) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.armed, fl.match, fl.at, fl.mode, fl.fired = true, nil, i, mode, false
}

// log returns the calls made so far.
func (fl *faults) log() []call {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return slices.Clone(fl.calls)
}

func (fl *faults) count(c call) int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	n := 0
	for _, x := range fl.calls {
		if x == c {
			n++
		}
	}
	return n
}

func (fl *faults) kindOf(obj runtime.Object) string {
	if u, ok := obj.(interface{ GetObjectKind() schema.ObjectKind }); ok && u.GetObjectKind().GroupVersionKind().Kind != "" {
		return u.GetObjectKind().GroupVersionKind().Kind
	}
	gvks, _, err := fl.scheme.ObjectKinds(obj)
	if err != nil || len(gvks) == 0 {
		return fmt.Sprintf("%T", obj)
	}
	return gvks[0].Kind
}

// do runs op as call c, with the armed fault if c matches it.
func (fl *faults) do(c call, name string, op func() error) error {
	fl.mu.Lock()
	fl.calls = append(fl.calls, c)
	hit := fl.armed && !fl.fired && (fl.match != nil && *fl.match == c || fl.match == nil && fl.at == len(fl.calls)-1)
	if hit {
		fl.fired = true
	}
	mode := fl.mode
	fl.mu.Unlock()
	if !hit {
		return op()
	}
	injected := apierrors.NewServiceUnavailable("injected fault on " + c.String())
	switch mode {
	case failAfter:
		if err := op(); err != nil {
			return err
		}
		return injected
	case conflictBefore:
		return apierrors.NewConflict(schema.GroupResource{Resource: strings.ToLower(c.kind) + "s"}, name, errors.New("injected conflict"))
	default:
		return injected
	}
}

func (fl *faults) funcs() interceptor.Funcs {
	return interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			return fl.do(call{"get", fl.kindOf(obj)}, key.Name, func() error { return c.Get(ctx, key, obj, opts...) })
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			return fl.do(call{"create", fl.kindOf(obj)}, obj.GetName(), func() error { return c.Create(ctx, obj, opts...) })
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			return fl.do(call{"update", fl.kindOf(obj)}, obj.GetName(), func() error { return c.Update(ctx, obj, opts...) })
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			return fl.do(call{"patch", fl.kindOf(obj)}, obj.GetName(), func() error { return c.Patch(ctx, obj, patch, opts...) })
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			return fl.do(call{"delete", fl.kindOf(obj)}, obj.GetName(), func() error { return c.Delete(ctx, obj, opts...) })
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			kind, name := fmt.Sprintf("%T", obj), ""
			if u, ok := obj.(interface {
				GetKind() string
				GetName() string
			}); ok {
				kind, name = u.GetKind(), u.GetName()
			}
			return fl.do(call{"apply", kind}, name, func() error { return c.Apply(ctx, obj, opts...) })
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			return fl.do(call{sub + "-update", fl.kindOf(obj)}, obj.GetName(), func() error {
				return c.SubResource(sub).Update(ctx, obj, opts...)
			})
		},
	}
}

// typeConverters are the fake clients' server-side apply schemas, built
// once: building them takes a quarter of a second.
var typeConverters = sync.OnceValue(func() []managedfields.TypeConverter {
	return []managedfields.TypeConverter{
		clientgoapplyconfigurations.NewTypeConverter(clientgoscheme.Scheme),
		managedfields.NewDeducedTypeConverter(),
	}
})

// newFakeClient is a fake API server holding objs, with the TSymbiote
// status subresource. It returns the client to give the reconciler, which
// goes through fl's faults and is recorded, and the direct client the test
// uses to play the rest of the cluster.
func newFakeClient(t *testing.T, fl *faults, objs ...client.Object) (reconciler, direct client.WithWatch) {
	t.Helper()
	scheme := setup.NewScheme()
	fl.scheme = scheme
	direct = fake.NewClientBuilder().
		WithScheme(scheme).
		WithTypeConverters(typeConverters()...).
		WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.TSymbiote{}, &corev1.Pod{}, &appsv1.StatefulSet{}).
		Build()
	return interceptor.NewClient(direct, fl.funcs()), direct
}

// settle reconciles until two reconciles in a row settle: succeed without
// the quick retry that follows a conflict. One settled reconcile may follow
// a fault that left a write half done; the second shows the state is
// steady. Only a few rounds are allowed, as the workqueue would retry.
func settle(t *testing.T, phase string, reconcile func() (ctrl.Result, error)) {
	t.Helper()
	settled := 0
	for i := 0; settled < 2; i++ {
		if i == 8 {
			t.Fatalf("phase %s: not settled after 8 reconciles", phase)
		}
		res, err := reconcile()
		if err != nil || res.RequeueAfter == conflictRetry {
			settled = 0
			continue
		}
		settled++
	}
}

// conflictRetry is the controller's quick retry after a conflict.
const conflictRetry = 200 * time.Millisecond

// convergencePhase is one step of an object's life in a convergence test:
// what happens before the reconciles of the step.
type convergencePhase[W any] struct {
	name   string
	before func(W)
}

// faultedWorld is a fake world whose API and control plane calls go
// through one faults.
type faultedWorld[S comparable] interface {
	reconcile() (ctrl.Result, error)
	state() S
	injectedFaults() *faults
}

// checkConverges plays phases in a world from start without faults, then,
// for each call the clean run made and each fault mode, once more with that
// call faulted, as if the controller died there; the state at the end of
// every phase must be the clean run's. skip leaves calls out (by index and
// call) to keep long lives fast.
func checkConverges[W faultedWorld[S], S comparable](t *testing.T, phases []convergencePhase[W], start func(*testing.T) W, skip func(i int, c call) bool) {
	t.Helper()
	run := func(t *testing.T, w W) []S {
		var out []S
		for _, ph := range phases {
			ph.before(w)
			settle(t, ph.name, w.reconcile)
			out = append(out, w.state())
		}
		return out
	}
	clean := start(t)
	want := run(t, clean)
	steps := clean.injectedFaults().log()
	t.Logf("clean run: %d calls, end state %+v", len(steps), want[len(want)-1])
	for i, c := range steps {
		if skip != nil && skip(i, c) {
			continue
		}
		for _, mode := range []faultMode{failBefore, failAfter, conflictBefore} {
			if c.verb == "cp" && mode == conflictBefore {
				continue // the control plane has no optimistic locks
			}
			t.Run(fmt.Sprintf("%02d %s: %s", i, c, mode), func(t *testing.T) {
				w := start(t)
				w.injectedFaults().nth(i, mode)
				got := run(t, w)
				for p := range want {
					if got[p] != want[p] {
						t.Errorf("after phase %s:\n got %+v\nwant %+v", phases[p].name, got[p], want[p])
					}
				}
				if !w.injectedFaults().fired {
					t.Error("the fault never fired")
				}
			})
		}
	}
}
