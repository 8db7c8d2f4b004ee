package controller_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
	"tsymbiote.dhouti.dev/operator/internal/controller"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
	"tsymbiote.dhouti.dev/proto/contract"
)

func ingressWorld(t *testing.T, objs ...client.Object) (*exWorld, *controller.IngressReconciler) {
	w := newExWorld(t, objs...)
	return w, &controller.IngressReconciler{
		Client: w.r.Client, APIReader: w.c, ControlPlane: w.r.ControlPlane, Recorder: w.events,
		Proxy: w.r.Proxy, Now: w.r.Now,
	}
}

func backendSvc(name, ip string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.ServiceSpec{ClusterIP: ip, Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
}

func tailscaleIngress(tls ...networkingv1.IngressTLS) *networkingv1.Ingress {
	class := contract.IngressClass
	exact := networkingv1.PathTypeExact
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "ing", Namespace: "default", UID: "uid-ing", Annotations: map[string]string{contract.AnnotationHTTPRedirect: "true"}},
		Spec: networkingv1.IngressSpec{
			IngressClassName: &class,
			TLS:              tls,
			Rules: []networkingv1.IngressRule{{Host: "dash.tsymbiote.test", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{
					{Path: "/api", PathType: &exact, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "api", Port: networkingv1.ServiceBackendPort{Number: 80}}}},
					{Path: "/", Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Name: "http"}}}},
				},
			}}}},
		},
	}
}

func TestIngress(t *testing.T) {
	tlsSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "dash-tls", Namespace: "default"},
		Data: map[string][]byte{corev1.TLSCertKey: []byte("CERT-1"), corev1.TLSPrivateKeyKey: []byte("KEY-1")}}
	w, r := ingressWorld(t, backendSvc("web", "10.96.0.20"), backendSvc("api", "10.96.0.21"), tlsSecret,
		tailscaleIngress(networkingv1.IngressTLS{Hosts: []string{"dash.tsymbiote.test"}, SecretName: "dash-tls"}))
	rec := func() (ctrl.Result, error) {
		return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "default", Name: "ing"}})
	}
	settle(t, "create", rec)
	c := w.config()
	if c == nil || c.Hostname != "dash" || c.HTTP == nil || len(c.HTTP.Routes) != 2 || !c.HTTP.RedirectHTTP {
		t.Fatalf("config %+v", c)
	}
	if rt := c.HTTP.Routes[0]; rt.Backend != "10.96.0.21:80" || rt.PathType != proxyconfig.PathTypeExact || rt.Host != "dash.tsymbiote.test" {
		t.Errorf("route 0 = %+v", rt)
	}
	if rt := c.HTTP.Routes[1]; rt.Backend != "10.96.0.20:80" || rt.PathType != proxyconfig.PathTypePrefix {
		t.Errorf("route 1 = %+v", rt)
	}
	cfg := w.secret("-config")
	if tl := c.HTTP.TLS; len(tl) != 1 || string(cfg.Data[tl[0].CertKey]) != "CERT-1" || string(cfg.Data[tl[0].KeyKey]) != "KEY-1" {
		t.Errorf("TLS %+v not copied: %v", tl, cfg.Data)
	}
	user := &corev1.Secret{}
	_ = w.c.Get(context.Background(), client.ObjectKeyFromObject(tlsSecret), user)
	if _, ok := user.Labels[controller.LabelIngressTLS]; !ok {
		t.Errorf("the TLS Secret is not labelled for the TLS cache: %v", user.Labels)
	}

	// Rotation: new content, new generation.
	user.Data[corev1.TLSCertKey] = []byte("CERT-2")
	if err := w.c.Update(context.Background(), user); err != nil {
		t.Fatal(err)
	}
	settle(t, "rotate", rec)
	if c2 := w.config(); c2.Generation != c.Generation+1 || string(w.secret("-config").Data[c2.HTTP.TLS[0].CertKey]) != "CERT-2" {
		t.Errorf("after rotation: generation %d, cert %q", c2.Generation, w.secret("-config").Data[c2.HTTP.TLS[0].CertKey])
	}

	w.proxyJoins("node-ing", "dash.tsymbiote.test")
	settle(t, "ready", rec)
	ing := &networkingv1.Ingress{}
	_ = w.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "ing"}, ing)
	if lb := ing.Status.LoadBalancer.Ingress; len(lb) != 2 || lb[0].Hostname != "dash.tsymbiote.test" || lb[0].IP != "100.64.0.7" {
		t.Errorf("load balancer status %+v", lb)
	}
	if err := w.c.Delete(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	settle(t, "delete", rec)
	if m := w.made(); len(m) != 0 {
		t.Errorf("left %v", m)
	}
	_ = w.c.Get(context.Background(), client.ObjectKeyFromObject(tlsSecret), user)
	if _, ok := user.Labels[controller.LabelIngressTLS]; ok {
		t.Errorf("the TLS Secret keeps its label after the Ingress went")
	}
	if !slices.Contains(w.cp.deleted, "node-ing") {
		t.Errorf("node not deleted: %v", w.cp.deleted)
	}
}

// TestIngressNoCertificate: without spec.tls on a control plane that
// issues no certificates, the Ingress is served over HTTP with one
// Warning, not one per reconcile.
func TestIngressNoCertificate(t *testing.T) {
	w, r := ingressWorld(t, backendSvc("web", "10.96.0.20"), backendSvc("api", "10.96.0.21"), tailscaleIngress())
	rec := func() (ctrl.Result, error) {
		return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "default", Name: "ing"}})
	}
	settle(t, "create", rec)
	settle(t, "again", rec)
	if c := w.config(); c == nil || c.HTTP.TailnetCert || len(c.HTTP.TLS) != 0 {
		t.Errorf("config %+v", c)
	}
	n := 0
	for len(w.events.Events) > 0 {
		if e := <-w.events.Events; strings.Contains(e, controller.ReasonNoCertificate) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d NoCertificate events, want 1", n)
	}
}

func TestIngressBadInput(t *testing.T) {
	noRules := tailscaleIngress()
	noRules.Spec.Rules = nil
	missingBackend := tailscaleIngress()
	missingSecret := tailscaleIngress(networkingv1.IngressTLS{SecretName: "nope"})
	for _, tc := range []struct {
		name   string
		ing    *networkingv1.Ingress
		reason string
		naming string
	}{
		{"no rules", noRules, controller.ReasonNoRules, "rules"},
		{"missing backend", missingBackend, controller.ReasonBackendMissing, `"api"`},
		{"missing secret", missingSecret, controller.ReasonTLSSecretMissing, `"nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := []client.Object{tc.ing, backendSvc("web", "10.96.0.20")}
			if tc.reason != controller.ReasonBackendMissing {
				objs = append(objs, backendSvc("api", "10.96.0.21"))
			}
			w, r := ingressWorld(t, objs...)
			settle(t, "bad", func() (ctrl.Result, error) {
				return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "default", Name: "ing"}})
			})
			ing := &networkingv1.Ingress{}
			_ = w.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "ing"}, ing)
			st := ing.Annotations[contract.AnnotationExposeStatus]
			if !strings.HasPrefix(st, tc.reason+": ") || !strings.Contains(st, tc.naming) {
				t.Errorf("status %q, want %s naming %s", st, tc.reason, tc.naming)
			}
			if m := w.made(); len(m) != 0 {
				t.Errorf("made %v", m)
			}
		})
	}
}

// routeCP is the fake control plane with route approval.
type routeCP struct {
	policyControlPlane
	mu                   sync.Mutex
	advertised, approved []netip.Prefix
	sets                 int
}

func (c *routeCP) Routes(ctx context.Context, id string) ([]netip.Prefix, []netip.Prefix, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.advertised), slices.Clone(c.approved), nil
}

func (c *routeCP) SetApprovedRoutes(ctx context.Context, id string, routes []netip.Prefix) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.approved = slices.Clone(routes)
	c.sets++
	return nil
}

func TestSubnetRouter(t *testing.T) {
	sr := &v1alpha1.SubnetRouter{ObjectMeta: metav1.ObjectMeta{Name: "svc-cidr", UID: "uid-sr"}, Spec: v1alpha1.SubnetRouterSpec{Routes: []string{"10.96.0.0/16"}}}
	w := newExWorld(t, sr)
	cp := &routeCP{policyControlPlane: policyControlPlane{w.cp}}
	r := &controller.SubnetRouterReconciler{Client: w.r.Client, ControlPlane: cp, Recorder: w.events, Proxy: w.r.Proxy, Now: w.r.Now}
	rec := func() (ctrl.Result, error) {
		return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Name: "svc-cidr"}})
	}
	get := func() *v1alpha1.SubnetRouter {
		out := &v1alpha1.SubnetRouter{}
		if err := w.c.Get(context.Background(), client.ObjectKey{Name: "svc-cidr"}, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	cond := func() *metav1.Condition { return apimeta.FindStatusCondition(get().Status.Conditions, "Ready") }
	settle(t, "create", rec)
	if c := w.config(); c == nil || len(c.AdvertiseRoutes) != 1 || c.AdvertiseRoutes[0].String() != "10.96.0.0/16" || c.Hostname != "svc-cidr" {
		t.Fatalf("config %+v", c)
	}
	w.proxyJoins("node-r", "svc-cidr.tsymbiote.test")
	cp.advertised = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}
	settle(t, "approve", rec)
	if c := cond(); c == nil || c.Status != metav1.ConditionTrue || cp.sets != 1 {
		t.Fatalf("condition %+v after %d approvals", c, cp.sets)
	}
	if got := get().Status.ApprovedRoutes; !slices.Equal(got, []string{"10.96.0.0/16"}) {
		t.Errorf("status approved %v", got)
	}
	// Already approved (autoApprovers): nothing written.
	settle(t, "steady", rec)
	if cp.sets != 1 {
		t.Errorf("approved again: %d sets", cp.sets)
	}
	// A route removed is withdrawn.
	s := get()
	s.Spec.Routes = []string{"192.0.2.0/24"}
	if err := w.c.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	settle(t, "change", rec)
	if len(cp.approved) != 0 {
		t.Errorf("approved %v after the route was removed, before the proxy applied the change", cp.approved)
	}
	w.proxyJoins("node-r", "svc-cidr.tsymbiote.test")
	cp.advertised = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	settle(t, "applied", rec)
	if !slices.Equal(cp.approved, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}) {
		t.Errorf("approved %v after the route changed", cp.approved)
	}
	// Bad input: reported, and the router removed.
	for _, bad := range [][]string{{"10.96.0.0/33"}, {"10.96.0.0/16", "10.96.1.0/24"}, {"10.96.0.1/16"}} {
		s := get()
		s.Spec.Routes = bad
		if err := w.c.Update(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		settle(t, "bad", rec)
		if c := cond(); c == nil || c.Reason != controller.ReasonInvalidRoutes {
			t.Errorf("routes %v: condition %+v", bad, c)
		} else {
			t.Logf("routes %v: %s", bad, c.Message)
		}
		if m := w.made(); len(m) != 0 {
			t.Errorf("routes %v: left %v", bad, m)
		}
	}
	if err := w.c.Delete(context.Background(), get()); err != nil {
		t.Fatal(err)
	}
	settle(t, "delete", rec)
	if m := w.made(); len(m) != 0 {
		t.Errorf("left %v", m)
	}
}

func FuzzParseRoutes(f *testing.F) {
	for _, s := range []string{"10.96.0.0/12", "10.96.0.0/16,10.96.1.0/24", "10.96.0.1/16", "", "fd00::/8, 10.0.0.0/8", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := controller.ParseRoutes(strings.Split(s, ","))
		if err != nil {
			return
		}
		for i, p := range ps {
			if p != p.Masked() {
				t.Errorf("%v not masked", p)
			}
			for _, q := range ps[:i] {
				if q.Overlaps(p) {
					t.Errorf("%v overlaps %v", p, q)
				}
			}
		}
	})
}
