package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
	"tsymbiote.dhouti.dev/proto/contract"
)

// IngressFinalizer keeps a served Ingress until its node and proxy are
// gone.
const IngressFinalizer = "tsymbiote.dhouti.dev/ingress-proxy"

// LabelIngressTLS marks a user's Secret that a tailscale-class Ingress
// names in spec.tls, so that the operator's TLS cache watches it (see
// setup.tlsSecretCache). Its value is unused; the operator removes it when
// no Ingress it serves names the Secret any more.
const LabelIngressTLS = "tsymbiote.dhouti.dev/ingress-tls"

// Reasons of Ingress Events and status annotations.
const (
	ReasonNoRules          = "NoRules"
	ReasonBackendMissing   = "BackendMissing"
	ReasonTLSSecretMissing = "TLSSecretMissing"
	ReasonTLSSecretInvalid = "TLSSecretInvalid"
	ReasonNoCertificate    = "NoCertificate"
)

// IngressReconciler serves Ingresses of class tailscale through a
// tsymbiote-proxy each: HTTP routing per the rules, HTTPS with the Secrets
// spec.tls names (or the tailnet's certificate where the control plane
// issues them).
type IngressReconciler struct {
	Client client.Client
	// APIReader reads the user's TLS Secrets when they are not yet in
	// TLSSecrets (labelled on first sight).
	APIReader client.Reader
	// TLSSecrets is a cache of the Secrets labelled LabelIngressTLS; nil
	// reads every Secret through APIReader (tests).
	TLSSecrets   cache.Cache
	ControlPlane controlplane.Client
	Recorder     record.EventRecorder
	Proxy        ProxyOptions
	Now          func() time.Time
}

// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses/finalizers,verbs=update
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingressclasses,verbs=get;list;watch

// SetupWithManager registers the reconciler with mgr.
func (r *IngressReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &networkingv1.Ingress{}, ingressTLSIndex, func(o client.Object) []string {
		ing := o.(*networkingv1.Ingress)
		var out []string
		for _, t := range ing.Spec.TLS {
			if t.SecretName != "" {
				out = append(out, t.SecretName)
			}
		}
		return out
	}); err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("expose-ingress").
		For(&networkingv1.Ingress{}).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(ingressOwner)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(ingressOwner)).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.ingressesInNamespace))
	if r.TLSSecrets != nil {
		b = b.WatchesRawSource(source.Kind(r.TLSSecrets, &corev1.Secret{}, handler.TypedEnqueueRequestsFromMapFunc(r.ingressesNaming)))
	}
	return b.Complete(r)
}

const ingressTLSIndex = "spec.tls.secretName"

func ingressOwner(_ context.Context, obj client.Object) []reconcile.Request {
	l := obj.GetLabels()
	if l[LabelOwnerKind] != kindIngress {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: l[LabelOwnerNamespace], Name: obj.GetAnnotations()[AnnotationOwnerName]}}}
}

// ingressesNaming maps a TLS Secret to the Ingresses that name it.
func (r *IngressReconciler) ingressesNaming(ctx context.Context, s *corev1.Secret) []reconcile.Request {
	var l networkingv1.IngressList
	if err := r.Client.List(ctx, &l, client.InNamespace(s.Namespace), client.MatchingFields{ingressTLSIndex: s.Name}); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range l.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&l.Items[i])})
	}
	return out
}

// ingressesInNamespace maps a backend Service to the served Ingresses of
// its namespace (a new cluster IP, a port added).
func (r *IngressReconciler) ingressesInNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var l networkingv1.IngressList
	if err := r.Client.List(ctx, &l, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range l.Items {
		if ServedIngress(&l.Items[i]) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&l.Items[i])})
		}
	}
	return out
}

// ServedIngress reports whether ing is of the tailscale class.
func ServedIngress(ing *networkingv1.Ingress) bool {
	if ing.Spec.IngressClassName != nil {
		return *ing.Spec.IngressClassName == contract.IngressClass
	}
	return ing.Annotations["kubernetes.io/ingress.class"] == contract.IngressClass
}

func (r *IngressReconciler) proxies() *proxies {
	return newProxies(r.Client, r.ControlPlane, r.Proxy, r.Now)
}

// Reconcile implements reconcile.Reconciler: get, withdraw, finalizer,
// validate (rules, backends, TLS), proxy, report.
func (r *IngressReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, result, err := r.reconcile(ctx, req)
	countReconcile("ingress", result, err)
	return requeueOnConflict(res, err)
}

func (r *IngressReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, string, error) {
	ing := &networkingv1.Ingress{}
	if err := r.Client.Get(ctx, req.NamespacedName, ing); err != nil {
		return ctrl.Result{}, "", client.IgnoreNotFound(err)
	}
	p := r.proxies()
	if !ing.DeletionTimestamp.IsZero() || !ServedIngress(ing) {
		if !controllerutil.ContainsFinalizer(ing, IngressFinalizer) {
			return ctrl.Result{}, "", nil
		}
		return ctrl.Result{}, "removed", r.withdraw(ctx, p, ing)
	}
	if !controllerutil.ContainsFinalizer(ing, IngressFinalizer) {
		patch := client.MergeFromWithOptions(ing.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(ing, IngressFinalizer)
		if err := r.Client.Patch(ctx, ing, patch); err != nil {
			return ctrl.Result{}, "", fmt.Errorf("adding finalizer: %w", err)
		}
	}
	spec, warn, reason, msg, err := r.ingressSpec(ctx, ing)
	if err != nil {
		return ctrl.Result{}, "", err
	}
	if reason != "" {
		if err := p.removeAllOf(ctx, kindIngress, ing.UID); err != nil {
			return ctrl.Result{}, "", err
		}
		return ctrl.Result{}, "invalid", r.report(ctx, ing, nil, reason, msg, "")
	}
	st, err := p.ensure(ctx, spec)
	if err != nil {
		return ctrl.Result{}, "", errors.Join(err, r.report(ctx, ing, nil, ReasonProxyFailed, err.Error(), ""))
	}
	if !st.Ready() {
		return ctrl.Result{RequeueAfter: notReadyRecheck}, "waiting", r.report(ctx, ing, st, ReasonProxyPending, st.notReadyMessage(), warn)
	}
	return ctrl.Result{}, "ready", r.report(ctx, ing, st, ReasonExposed, "served on the tailnet as "+st.FQDN, warn)
}

// withdraw removes ing's node and proxy, the TLS labels only it needed,
// what was reported on it, and its finalizer.
func (r *IngressReconciler) withdraw(ctx context.Context, p *proxies, ing *networkingv1.Ingress) error {
	if err := p.removeAllOf(ctx, kindIngress, ing.UID); err != nil {
		return err
	}
	if err := r.unlabelTLSSecrets(ctx, ing); err != nil {
		return err
	}
	a := maps.Clone(ing.Annotations)
	delete(a, contract.AnnotationTailnetFQDN)
	delete(a, contract.AnnotationTailnetIPs)
	delete(a, contract.AnnotationExposeStatus)
	patch := client.MergeFromWithOptions(ing.DeepCopy(), client.MergeFromWithOptimisticLock{})
	ing.Annotations = a
	controllerutil.RemoveFinalizer(ing, IngressFinalizer)
	if err := r.Client.Patch(ctx, ing, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("removing finalizer: %w", err)
	}
	if len(ing.Status.LoadBalancer.Ingress) > 0 && ing.DeletionTimestamp.IsZero() {
		ing.Status.LoadBalancer.Ingress = nil
		if err := r.Client.Status().Update(ctx, ing); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("clearing ingress status: %w", err)
		}
	}
	return nil
}

// unlabelTLSSecrets removes LabelIngressTLS from the Secrets ing names
// that no other served Ingress of the namespace names.
func (r *IngressReconciler) unlabelTLSSecrets(ctx context.Context, ing *networkingv1.Ingress) error {
	var l networkingv1.IngressList
	if err := r.Client.List(ctx, &l, client.InNamespace(ing.Namespace)); err != nil {
		return fmt.Errorf("listing ingresses: %w", err)
	}
	for _, t := range ing.Spec.TLS {
		used := slices.ContainsFunc(l.Items, func(o networkingv1.Ingress) bool {
			return o.UID != ing.UID && ServedIngress(&o) && o.DeletionTimestamp.IsZero() &&
				slices.ContainsFunc(o.Spec.TLS, func(ot networkingv1.IngressTLS) bool { return ot.SecretName == t.SecretName })
		})
		if used || t.SecretName == "" {
			continue
		}
		s := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ing.Namespace, Name: t.SecretName}, s); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("reading secret %s: %w", t.SecretName, err)
		}
		if _, ok := s.Labels[LabelIngressTLS]; !ok {
			continue
		}
		patch := client.MergeFrom(s.DeepCopy())
		delete(s.Labels, LabelIngressTLS)
		if err := r.Client.Patch(ctx, s, patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("unlabelling secret %s: %w", t.SecretName, err)
		}
	}
	return nil
}

// ingressHostname is the tailnet hostname of ing: the annotation, else
// the first label of its first TLS or rule host, else <namespace>-<name>.
func ingressHostname(ing *networkingv1.Ingress) string {
	if h := ing.Annotations[contract.AnnotationHostname]; h != "" {
		return h
	}
	for _, t := range ing.Spec.TLS {
		for _, h := range t.Hosts {
			if l, _, _ := strings.Cut(h, "."); l != "" && l != "*" {
				return l
			}
		}
	}
	for _, rule := range ing.Spec.Rules {
		if l, _, _ := strings.Cut(rule.Host, "."); l != "" && l != "*" {
			return l
		}
	}
	return ing.Namespace + "-" + ing.Name
}

// ingressSpec is the proxy ing asks for; or a reason and message saying
// what is wrong with it. warn is a problem that does not stop serving.
func (r *IngressReconciler) ingressSpec(ctx context.Context, ing *networkingv1.Ingress) (spec *proxySpec, warn, reason, msg string, err error) {
	host := ingressHostname(ing)
	if err := proxyconfig.ValidHostname(host); err != nil {
		return nil, "", ReasonInvalidHostname, fmt.Sprintf("hostname (annotation %s, or the first label of the first host): %v", contract.AnnotationHostname, err), nil
	}
	if len(ing.Spec.Rules) == 0 && ing.Spec.DefaultBackend == nil {
		return nil, "", ReasonNoRules, "the Ingress has neither rules nor a defaultBackend: nothing to route to", nil
	}
	tags, reason, msg := checkTags(ctx, r.ControlPlane, ing.Annotations[contract.AnnotationTags], r.Proxy.DefaultTags)
	if reason != "" {
		return nil, "", reason, msg, nil
	}
	res, rerr := proxyResources(ing.Annotations, r.Proxy.Resources)
	if rerr != nil {
		// Bad input, reported on the Ingress; not a failed reconcile.
		return nil, "", ReasonInvalidResources, rerr.Error(), nil //nolint:nilerr
	}
	h := &proxyconfig.HTTP{RedirectHTTP: ing.Annotations[contract.AnnotationHTTPRedirect] == "true"}
	for i, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for j, path := range rule.HTTP.Paths {
			where := fmt.Sprintf("spec.rules[%d].http.paths[%d]", i, j)
			be, reason, msg, err := r.backend(ctx, ing.Namespace, where, &path.Backend)
			if err != nil || reason != "" {
				return nil, "", reason, msg, err
			}
			pt := proxyconfig.PathTypePrefix
			if path.PathType != nil {
				pt = string(*path.PathType)
			}
			h.Routes = append(h.Routes, proxyconfig.Route{Host: rule.Host, Path: path.Path, PathType: pt, Backend: be, Service: ing.Namespace + "/" + path.Backend.Service.Name})
		}
	}
	if db := ing.Spec.DefaultBackend; db != nil {
		be, reason, msg, err := r.backend(ctx, ing.Namespace, "spec.defaultBackend", db)
		if err != nil || reason != "" {
			return nil, "", reason, msg, err
		}
		h.Routes = append(h.Routes, proxyconfig.Route{Path: "/", PathType: proxyconfig.PathTypePrefix, Backend: be, Service: ing.Namespace + "/" + db.Service.Name})
	}
	if len(h.Routes) == 0 {
		return nil, "", ReasonNoRules, "no rule of the Ingress has HTTP paths: nothing to route to", nil
	}
	files := map[string][]byte{}
	for i, t := range ing.Spec.TLS {
		if t.SecretName == "" {
			continue
		}
		s, reason, msg, err := r.tlsSecret(ctx, ing.Namespace, t.SecretName)
		if err != nil || reason != "" {
			return nil, "", reason, fmt.Sprintf("spec.tls[%d]: %s", i, msg), err
		}
		ck, kk := fmt.Sprintf("tls-%d.crt", i), fmt.Sprintf("tls-%d.key", i)
		files[ck], files[kk] = s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
		h.TLS = append(h.TLS, proxyconfig.TLS{Hosts: t.Hosts, CertKey: ck, KeyKey: kk})
	}
	if len(h.TLS) == 0 {
		if controlplane.IssuesCertificates(r.ControlPlane) {
			h.TailnetCert = true
		} else {
			warn = fmt.Sprintf("serving HTTP only: the %s control plane cannot issue certificates; name a Secret (e.g. from cert-manager) in spec.tls", r.ControlPlane.Backend())
		}
	}
	return &proxySpec{
		Name:      proxyName("ts-ing", ing.Namespace, ing.Name),
		Owner:     proxyOwner{Kind: kindIngress, Namespace: ing.Namespace, Name: ing.Name, UID: ing.UID},
		Tags:      tags,
		Config:    proxyconfig.Config{Hostname: host, HTTP: h},
		Files:     files,
		Resources: res,
	}, warn, "", "", nil
}

// backend resolves an Ingress backend to ClusterIP:port: the test cluster,
// like many, has no cluster DNS for the proxy to resolve names with.
func (r *IngressReconciler) backend(ctx context.Context, ns, where string, b *networkingv1.IngressBackend) (string, string, string, error) {
	if b.Service == nil {
		return "", ReasonUnsupported, where + ": only Service backends are supported", nil
	}
	svc := &corev1.Service{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: b.Service.Name}, svc); err != nil {
		if apierrors.IsNotFound(err) {
			return "", ReasonBackendMissing, fmt.Sprintf("%s: service %q not found", where, b.Service.Name), nil
		}
		return "", "", "", fmt.Errorf("reading service %s: %w", b.Service.Name, err)
	}
	fw, reason, msg := forwards(svc)
	if reason != "" {
		return "", reason, fmt.Sprintf("%s: service %q: %s", where, b.Service.Name, msg), nil
	}
	for i, sp := range svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue
		}
		if b.Service.Port.Name != "" && sp.Name == b.Service.Port.Name || b.Service.Port.Name == "" && sp.Port == b.Service.Port.Number {
			host, _, _ := net.SplitHostPort(fw[i].Target)
			return net.JoinHostPort(host, strconv.Itoa(int(sp.Port))), "", "", nil
		}
	}
	return "", ReasonBackendMissing, fmt.Sprintf("%s: service %q has no TCP port %s", where, b.Service.Name, portString(b.Service.Port)), nil
}

func portString(p networkingv1.ServiceBackendPort) string {
	if p.Name != "" {
		return strconv.Quote(p.Name)
	}
	return strconv.Itoa(int(p.Number))
}

// tlsSecret reads a TLS Secret an Ingress names, labelling it so that the
// TLS cache watches it from then on.
func (r *IngressReconciler) tlsSecret(ctx context.Context, ns, name string) (*corev1.Secret, string, string, error) {
	s := &corev1.Secret{}
	key := client.ObjectKey{Namespace: ns, Name: name}
	var err error
	if r.TLSSecrets != nil {
		err = r.TLSSecrets.Get(ctx, key, s)
	}
	if r.TLSSecrets == nil || apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, s)
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, ReasonTLSSecretMissing, fmt.Sprintf("secret %q not found", name), nil
		}
		return nil, "", "", fmt.Errorf("reading TLS secret %s: %w", name, err)
	}
	if _, ok := s.Labels[LabelIngressTLS]; !ok {
		patch := client.MergeFrom(s.DeepCopy())
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[LabelIngressTLS] = "true"
		if err := r.Client.Patch(ctx, s, patch); err != nil {
			return nil, "", "", fmt.Errorf("labelling TLS secret %s: %w", name, err)
		}
	}
	if len(s.Data[corev1.TLSCertKey]) == 0 || len(s.Data[corev1.TLSPrivateKeyKey]) == 0 {
		return nil, ReasonTLSSecretInvalid, fmt.Sprintf("secret %q must hold %s and %s", name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey), nil
	}
	return s, "", "", nil
}

// report writes the Ingress's annotations and load balancer status, and an
// Event when its status changes; warn, a problem that does not stop
// serving, is reported (once) beside it.
func (r *IngressReconciler) report(ctx context.Context, ing *networkingv1.Ingress, st *proxyState, reason, msg, warn string) error {
	a := maps.Clone(ing.Annotations)
	if a == nil {
		a = map[string]string{}
	}
	status := "Ready"
	if reason != ReasonExposed {
		status = reason + ": " + msg
	}
	if warn != "" {
		status += "; " + ReasonNoCertificate + ": " + warn
	}
	changed := a[contract.AnnotationExposeStatus] != status
	a[contract.AnnotationExposeStatus] = status
	var lb []networkingv1.IngressLoadBalancerIngress
	if st != nil && st.FQDN != "" {
		a[contract.AnnotationTailnetFQDN] = st.FQDN
		a[contract.AnnotationTailnetIPs] = joinAddrs(st.IPs)
		for _, ip := range st.IPs {
			lb = append(lb, networkingv1.IngressLoadBalancerIngress{Hostname: st.FQDN, IP: ip.String()})
		}
	} else {
		delete(a, contract.AnnotationTailnetFQDN)
		delete(a, contract.AnnotationTailnetIPs)
	}
	if !maps.Equal(a, ing.Annotations) {
		patch := client.MergeFrom(ing.DeepCopy())
		ing.Annotations = a
		if err := r.Client.Patch(ctx, ing, patch); err != nil {
			return fmt.Errorf("reporting on the ingress: %w", err)
		}
	}
	if !equality.Semantic.DeepEqual(ing.Status.LoadBalancer.Ingress, lb) {
		ing.Status.LoadBalancer.Ingress = lb
		if err := r.Client.Status().Update(ctx, ing); err != nil {
			return fmt.Errorf("updating ingress status: %w", err)
		}
	}
	if changed && r.Recorder != nil {
		r.Recorder.Event(ing, exposeEventType(reason), reason, msg)
		if warn != "" {
			r.Recorder.Event(ing, corev1.EventTypeWarning, ReasonNoCertificate, warn)
		}
	}
	return nil
}
