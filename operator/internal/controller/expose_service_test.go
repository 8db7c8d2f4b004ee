package controller_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
	"tsymbiote.dhouti.dev/operator/internal/controller"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
	"tsymbiote.dhouti.dev/operator/internal/setup"
	"tsymbiote.dhouti.dev/proto/contract"
)

const opNS = "tsymbiote-system"

// policyControlPlane is the fake control plane with a policy whose
// tagOwners list tag:k8s and tag:prod.
type policyControlPlane struct{ *fakeControlPlane }

func (policyControlPlane) GetPolicy(ctx context.Context) (*controlplane.Policy, error) {
	return &controlplane.Policy{Body: `{
  // HuJSON, as policies are written
  "tagOwners": {"tag:k8s": ["admin@"], "tag:prod": ["admin@"],},
}`}, nil
}

// exWorld is a fake cluster with one Service and the Service reconciler.
type exWorld struct {
	t      *testing.T
	c      client.Client
	r      *controller.ServiceReconciler
	cp     *fakeControlPlane
	faults *faults
	events *record.FakeRecorder
}

func newExWorld(t *testing.T, objs ...client.Object) *exWorld {
	t.Helper()
	fl := &faults{}
	scheme := setup.NewScheme()
	fl.scheme = scheme
	direct := fake.NewClientBuilder().WithScheme(scheme).WithTypeConverters(typeConverters()...).
		WithObjects(objs...).
		WithStatusSubresource(&corev1.Service{}, &networkingv1.Ingress{}, &appsv1.Deployment{}, &v1alpha1.SubnetRouter{}).
		Build()
	clock := newFakeClock()
	cp := newFakeControlPlane(clock.Now)
	w := &exWorld{t: t, c: direct, cp: cp, faults: fl, events: record.NewFakeRecorder(1000)}
	w.r = &controller.ServiceReconciler{
		Client: interceptor.NewClient(direct, fl.funcs()), ControlPlane: policyControlPlane{cp}, Recorder: w.events,
		Proxy: controller.ProxyOptions{Namespace: opNS, Image: "tsymbiote/proxy:test", DefaultTags: []string{contract.TagK8s}},
		Now:   clock.Now,
	}
	return w
}

func exposedService(name string, annotations map[string]string) *corev1.Service {
	a := map[string]string{contract.AnnotationExpose: "true"}
	for k, v := range annotations {
		a[k] = v
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: "uid-" + "svc-" + "0001", Annotations: a},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
			{Name: "echo", Port: 7, Protocol: corev1.ProtocolUDP},
		}},
	}
}

func (w *exWorld) reconcile() (ctrl.Result, error) {
	return w.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "default", Name: "web"}})
}

func (w *exWorld) svc() *corev1.Service {
	s := &corev1.Service{}
	if err := w.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "web"}, s); err != nil {
		w.t.Fatal(err)
	}
	return s
}

func (w *exWorld) updateSvc(f func(*corev1.Service)) {
	s := w.svc()
	f(s)
	if err := w.c.Update(context.Background(), s); err != nil {
		w.t.Fatal(err)
	}
}

// made lists the objects in the operator's namespace, "Kind/name".
func (w *exWorld) made() []string {
	ctx := context.Background()
	var out []string
	var deps appsv1.DeploymentList
	var secs corev1.SecretList
	var sas corev1.ServiceAccountList
	var roles rbacv1.RoleList
	var rbs rbacv1.RoleBindingList
	for _, l := range []client.ObjectList{&deps, &secs, &sas, &roles, &rbs} {
		if err := w.c.List(ctx, l, client.InNamespace(opNS)); err != nil {
			w.t.Fatal(err)
		}
	}
	for _, d := range deps.Items {
		out = append(out, "Deployment/"+d.Name)
	}
	for _, s := range secs.Items {
		out = append(out, "Secret/"+s.Name)
	}
	for _, s := range sas.Items {
		out = append(out, "ServiceAccount/"+s.Name)
	}
	for _, s := range roles.Items {
		out = append(out, "Role/"+s.Name)
	}
	for _, s := range rbs.Items {
		out = append(out, "RoleBinding/"+s.Name)
	}
	slices.Sort(out)
	return out
}

func (w *exWorld) secret(suffix string) *corev1.Secret {
	var secs corev1.SecretList
	if err := w.c.List(context.Background(), &secs, client.InNamespace(opNS)); err != nil {
		w.t.Fatal(err)
	}
	for i := range secs.Items {
		if strings.HasSuffix(secs.Items[i].Name, suffix) {
			return &secs.Items[i]
		}
	}
	return nil
}

func (w *exWorld) config() *proxyconfig.Config {
	s := w.secret("-config")
	if s == nil {
		return nil
	}
	c, err := proxyconfig.Parse(s.Data[proxyconfig.ConfigKey])
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// proxyJoins plays the proxy and the kubelet: the state Secret annotated
// as the proxy does once on the tailnet, the Deployment ready.
func (w *exWorld) proxyJoins(id, fqdn string) {
	ctx := context.Background()
	st := w.secret("-state")
	if st == nil {
		w.t.Fatal("no state secret")
	}
	gen := w.config().Generation
	if st.Annotations == nil {
		st.Annotations = map[string]string{}
	}
	st.Annotations[proxyconfig.AnnotationDeviceID] = id
	st.Annotations[proxyconfig.AnnotationFQDN] = fqdn + "."
	st.Annotations[proxyconfig.AnnotationIPs] = "100.64.0.7,fd7a:115c:a1e0::7"
	st.Annotations[proxyconfig.AnnotationConfigGeneration] = fmt.Sprint(gen)
	if err := w.c.Update(ctx, st); err != nil {
		w.t.Fatal(err)
	}
	var deps appsv1.DeploymentList
	if err := w.c.List(ctx, &deps, client.InNamespace(opNS)); err != nil || len(deps.Items) != 1 {
		w.t.Fatalf("deployments: %v, %v", deps.Items, err)
	}
	d := &deps.Items[0]
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, ReadyReplicas: 1, UpdatedReplicas: 1}
	if err := w.c.Status().Update(ctx, d); err != nil {
		w.t.Fatal(err)
	}
	w.cp.register(id, fqdn, contract.TagK8s)
}

func (w *exWorld) condition() *metav1.Condition {
	return apimeta.FindStatusCondition(w.svc().Status.Conditions, contract.ConditionTailnetExposed)
}

// state summarizes the world for the convergence test.
func (w *exWorld) state() string {
	s := &corev1.Service{}
	err := w.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "web"}, s)
	var b strings.Builder
	if err == nil {
		c := apimeta.FindStatusCondition(s.Status.Conditions, contract.ConditionTailnetExposed)
		fmt.Fprintf(&b, "svc label=%q fqdn=%q finalizers=%v", s.Labels[contract.LabelExposed], s.Annotations[contract.AnnotationTailnetFQDN], s.Finalizers)
		if c != nil {
			fmt.Fprintf(&b, " cond=%s/%s", c.Status, c.Reason)
		}
	}
	fmt.Fprintf(&b, " made=%v devices=%v", w.made(), w.cp.deviceIDs())
	if c := w.config(); c != nil {
		fmt.Fprintf(&b, " host=%s gen=%d", c.Hostname, c.Generation)
	}
	if a := w.secret("-auth"); a != nil {
		fmt.Fprintf(&b, " keytags=%s", a.Annotations["tsymbiote.dhouti.dev/key-tags"])
	}
	return b.String()
}

func TestServiceExposure(t *testing.T) {
	w := newExWorld(t, exposedService("web", nil))
	settle(t, "create", w.reconcile)
	if got := len(w.made()); got != 7 {
		t.Fatalf("made %v, want a Deployment, 3 Secrets, SA, Role, RoleBinding", w.made())
	}
	c := w.config()
	if c.Hostname != "default-web" || len(c.Forwards) != 2 || c.Forwards[0].Target != "10.96.0.10:80" || c.Forwards[1].Protocol != "UDP" {
		t.Errorf("config = %+v", c)
	}
	if cond := w.condition(); cond == nil || cond.Reason != controller.ReasonProxyPending {
		t.Errorf("condition = %+v, want ProxyPending", cond)
	}
	if w.cp.minted() != 1 || !slices.Equal(w.cp.keys[0].Tags, []string{contract.TagK8s}) || w.cp.keys[0].Ephemeral {
		t.Errorf("keys = %+v, want one non-ephemeral tag:k8s key", w.cp.keys)
	}
	var dep appsv1.Deployment
	var deps appsv1.DeploymentList
	_ = w.c.List(context.Background(), &deps, client.InNamespace(opNS))
	dep = deps.Items[0]
	pc := dep.Spec.Template.Spec.Containers[0]
	if sc := pc.SecurityContext; sc == nil || !*sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("security context %+v is not restricted", sc)
	}
	envs := map[string]bool{}
	for _, e := range pc.Env {
		envs[e.Name] = true
	}
	for _, k := range []string{proxyconfig.EnvPodNamespace, proxyconfig.EnvConfigSecret, proxyconfig.EnvStateSecret, proxyconfig.EnvAuthKey, proxyconfig.EnvControlURL} {
		if !envs[k] {
			t.Errorf("proxy env lacks %s", k)
		}
	}

	w.proxyJoins("node-1", "default-web.tsymbiote.test")
	settle(t, "ready", w.reconcile)
	s := w.svc()
	if s.Labels[contract.LabelExposed] != "true" || s.Annotations[contract.AnnotationTailnetFQDN] != "default-web.tsymbiote.test" ||
		s.Annotations[contract.AnnotationTailnetIPs] != "100.64.0.7,fd7a:115c:a1e0::7" {
		t.Errorf("service not reported: labels %v annotations %v", s.Labels, s.Annotations)
	}
	if cond := w.condition(); cond == nil || cond.Status != metav1.ConditionTrue {
		t.Errorf("condition = %+v, want True", cond)
	}

	w.updateSvc(func(s *corev1.Service) { s.Annotations[contract.AnnotationHostname] = "api" })
	settle(t, "rename", w.reconcile)
	if c := w.config(); c.Hostname != "api" || c.Generation != 2 {
		t.Errorf("after rename: config %+v, want hostname api generation 2", c)
	}
	if w.cp.minted() != 1 {
		t.Errorf("a rename minted a key")
	}

	w.updateSvc(func(s *corev1.Service) { s.Annotations[contract.AnnotationTags] = "tag:prod,tag:k8s" })
	settle(t, "retag", w.reconcile)
	if w.cp.minted() != 2 || !slices.Equal(w.cp.keys[1].Tags, []string{"tag:k8s", "tag:prod"}) {
		t.Errorf("retag: keys %+v", w.cp.keys)
	}
	if !slices.Equal(w.cp.deleted, []string{"node-1"}) {
		t.Errorf("retag deleted %v, want the old node", w.cp.deleted)
	}

	w.updateSvc(func(s *corev1.Service) { s.Annotations[contract.AnnotationTags] = "tag:nobody" })
	settle(t, "unowned tag", w.reconcile)
	if cond := w.condition(); cond == nil || cond.Reason != controller.ReasonTagsNotOwned || !strings.Contains(cond.Message, "tag:nobody") {
		t.Errorf("condition = %+v, want TagsNotOwned naming tag:nobody", cond)
	}
	if m := w.made(); len(m) != 0 {
		t.Errorf("bad tags left %v", m)
	}

	w.updateSvc(func(s *corev1.Service) { delete(s.Annotations, contract.AnnotationTags) })
	settle(t, "fixed", w.reconcile)
	w.proxyJoins("node-2", "api.tsymbiote.test")
	settle(t, "ready again", w.reconcile)
	w.updateSvc(func(s *corev1.Service) { delete(s.Annotations, contract.AnnotationExpose) })
	settle(t, "unexpose", w.reconcile)
	if m := w.made(); len(m) != 0 {
		t.Errorf("after removing the annotation: %v left", m)
	}
	if !slices.Contains(w.cp.deleted, "node-2") {
		t.Errorf("deleted %v, want node-2", w.cp.deleted)
	}
	s = w.svc()
	if s.Labels[contract.LabelExposed] != "" || s.Annotations[contract.AnnotationTailnetFQDN] != "" || len(s.Finalizers) != 0 || w.condition() != nil {
		t.Errorf("service keeps the report: %v %v %v %v", s.Labels, s.Annotations, s.Finalizers, s.Status.Conditions)
	}
}

func TestServiceBadInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mod    func(*corev1.Service)
		reason string
		naming string
	}{
		{"hostname", func(s *corev1.Service) { s.Annotations[contract.AnnotationHostname] = "Not_A_Label" }, controller.ReasonInvalidHostname, "Not_A_Label"},
		{"tag syntax", func(s *corev1.Service) { s.Annotations[contract.AnnotationTags] = "k8s" }, controller.ReasonInvalidTags, `"k8s"`},
		{"tag not owned", func(s *corev1.Service) { s.Annotations[contract.AnnotationTags] = "tag:nobody" }, controller.ReasonTagsNotOwned, "tag:nobody"},
		{"headless", func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }, controller.ReasonUnsupported, "headless"},
		{"external name", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName }, controller.ReasonUnsupported, "ExternalName"},
		{"sctp", func(s *corev1.Service) { s.Spec.Ports[0].Protocol = corev1.ProtocolSCTP }, controller.ReasonUnsupported, "SCTP"},
		{"resources", func(s *corev1.Service) { s.Annotations[contract.AnnotationProxyLimits] = "gpu=1" }, controller.ReasonInvalidResources, "gpu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := exposedService("web", nil)
			tc.mod(s)
			w := newExWorld(t, s)
			settle(t, "bad", w.reconcile)
			cond := w.condition()
			if cond == nil || cond.Reason != tc.reason || !strings.Contains(cond.Message, tc.naming) {
				t.Fatalf("condition %+v, want %s naming %s", cond, tc.reason, tc.naming)
			}
			if m := w.made(); len(m) != 0 {
				t.Errorf("made %v for bad input", m)
			}
			select {
			case e := <-w.events.Events:
				if !strings.Contains(e, "Warning "+tc.reason) {
					t.Errorf("event %q", e)
				}
			default:
				t.Error("no event")
			}
		})
	}
}

func TestServiceLoadBalancerClass(t *testing.T) {
	s := exposedService("web", nil)
	delete(s.Annotations, contract.AnnotationExpose)
	s.Spec.Type = corev1.ServiceTypeLoadBalancer
	s.Spec.LoadBalancerClass = ptrTo(contract.LoadBalancerClass)
	w := newExWorld(t, s)
	settle(t, "create", w.reconcile)
	w.proxyJoins("node-1", "default-web.tsymbiote.test")
	settle(t, "ready", w.reconcile)
	ing := w.svc().Status.LoadBalancer.Ingress
	if len(ing) != 2 || ing[0].IP != "100.64.0.7" || ing[0].Hostname != "default-web.tsymbiote.test" {
		t.Errorf("load balancer ingress = %+v", ing)
	}
	if err := w.c.Delete(context.Background(), w.svc()); err != nil {
		t.Fatal(err)
	}
	settle(t, "delete", w.reconcile)
	if m := w.made(); len(m) != 0 {
		t.Errorf("left %v", m)
	}
}

func TestServiceProxyGroup(t *testing.T) {
	a := exposedService("web", map[string]string{contract.AnnotationProxyGroup: "shared"})
	b := exposedService("api", map[string]string{contract.AnnotationProxyGroup: "shared"})
	b.UID, b.Spec.ClusterIP = "uid-api", "10.96.0.11"
	b.Spec.Ports = []corev1.ServicePort{{Name: "grpc", Port: 9000, Protocol: corev1.ProtocolTCP}, {Name: "dup", Port: 80, Protocol: corev1.ProtocolTCP}}
	w := newExWorld(t, a, b)
	rec := func(name string) func() (ctrl.Result, error) {
		return func() (ctrl.Result, error) {
			return w.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "default", Name: name}})
		}
	}
	settle(t, "web", rec("web"))
	settle(t, "api", rec("api"))
	if n := len(w.made()); n != 7 {
		t.Fatalf("made %v, want one proxy for the group", w.made())
	}
	c := w.config()
	if c.Hostname != "shared" || len(c.Forwards) != 2 || c.Forwards[0].Service != "default/api" {
		t.Errorf("group config %+v: want api's two ports (first by name); web's port 80 conflicts", c)
	}
	if cond := w.condition(); cond == nil || cond.Reason != controller.ReasonPortConflict || !strings.Contains(cond.Message, "default/api") {
		t.Errorf("web condition %+v, want PortConflict naming default/api", cond)
	}
	api := &corev1.Service{}
	w.updateSvc(func(s *corev1.Service) { delete(s.Annotations, contract.AnnotationExpose) })
	settle(t, "web leaves", rec("web"))
	settle(t, "api", rec("api"))
	if c := w.config(); c == nil || len(c.Forwards) != 2 || c.Generation != 1 {
		t.Errorf("after web left: %+v, want api's two ports, unchanged", c)
	}
	if w.svc().Finalizers != nil {
		t.Errorf("web keeps its finalizer after leaving")
	}
	_ = w.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "api"}, api)
	if err := w.c.Delete(context.Background(), api); err != nil {
		t.Fatal(err)
	}
	settle(t, "api deleted", rec("api"))
	if m := w.made(); len(m) != 0 {
		t.Errorf("left %v", m)
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestServiceConverges fails each call of an exposed Service's life once,
// before or after it takes effect, and checks that the next reconciles
// reach the state of a run without faults at the end of every phase.
func TestServiceConverges(t *testing.T) {
	phases := []convergencePhase[*exWorld]{
		{"create", func(w *exWorld) {}},
		{"ready", func(w *exWorld) { w.proxyJoins("node-1", "default-web.tsymbiote.test") }},
		{"rename", func(w *exWorld) {
			w.updateSvc(func(s *corev1.Service) { s.Annotations[contract.AnnotationHostname] = "api" })
		}},
		{"retag", func(w *exWorld) {
			w.updateSvc(func(s *corev1.Service) { s.Annotations[contract.AnnotationTags] = "tag:prod" })
		}},
		{"delete", func(w *exWorld) {
			if err := w.c.Delete(context.Background(), w.svc()); err != nil {
				w.t.Fatal(err)
			}
		}},
	}
	start := func(t *testing.T) *exWorld {
		w := newExWorld(t, exposedService("web", nil))
		w.cp.faults = w.faults
		return w
	}
	// Each subtest replays the whole life (94 calls, about 0.7s): every
	// control plane call is faulted, and every third API call (every tenth
	// with -short), which still covers each phase.
	every := map[bool]int{true: 10, false: 3}[testing.Short()]
	checkConverges(t, phases, start, func(i int, c call) bool { return i%every != 0 && c.verb != "cp" })
}

func (w *exWorld) injectedFaults() *faults { return w.faults }
