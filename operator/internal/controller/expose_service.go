package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
	"tsymbiote.dhouti.dev/proto/contract"
)

// ServiceFinalizer keeps an exposed Service until its node and proxy are
// gone.
const ServiceFinalizer = "tsymbiote.dhouti.dev/service-proxy"

// Owner kinds of proxies.
const (
	kindService      = "Service"
	kindProxyGroup   = "ProxyGroup"
	kindIngress      = "Ingress"
	kindSubnetRouter = "SubnetRouter"
)

// Reasons of the TailnetExposed condition and of Events.
const (
	ReasonExposed          = "Exposed"
	ReasonProxyPending     = "ProxyPending"
	ReasonInvalidHostname  = "InvalidHostname"
	ReasonInvalidTags      = "InvalidTags"
	ReasonTagsNotOwned     = "TagsNotOwned"
	ReasonInvalidResources = "InvalidResources"
	ReasonUnsupported      = "UnsupportedService"
	ReasonPortConflict     = "PortConflict"
	ReasonProxyFailed      = "ProxyFailed"
)

// notReadyRecheck is how soon a proxy that is not ready yet is looked at
// again, besides the watch on its Deployment and state Secret.
const notReadyRecheck = 5 * time.Second

// ServiceReconciler exposes annotated and tailscale-class LoadBalancer
// Services on the tailnet, each through a tsymbiote-proxy of its own or
// through the proxy its group shares.
type ServiceReconciler struct {
	Client       client.Client
	ControlPlane controlplane.Client
	Recorder     record.EventRecorder
	Proxy        ProxyOptions
	// Now is the clock (key expiry); time.Now when nil.
	Now func() time.Time
}

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups="",resources=services/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=services/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets;serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// SetupWithManager registers the reconciler with mgr. Proxy objects carry
// their owner in labels (owner references cannot cross namespaces), so a
// change to a proxy's Deployment or state Secret is mapped back by label.
func (r *ServiceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toOwner := handler.EnqueueRequestsFromMapFunc(r.ownersOf)
	return ctrl.NewControllerManagedBy(mgr).
		Named("expose-service").
		For(&corev1.Service{}).
		Watches(&appsv1.Deployment{}, toOwner).
		Watches(&corev1.Secret{}, toOwner).
		Complete(r)
}

// ownersOf maps a proxy object to the Services it serves.
func (r *ServiceReconciler) ownersOf(ctx context.Context, obj client.Object) []reconcile.Request {
	l := obj.GetLabels()
	ns, name := l[LabelOwnerNamespace], obj.GetAnnotations()[AnnotationOwnerName]
	switch l[LabelOwnerKind] {
	case kindService:
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
	case kindProxyGroup:
		var reqs []reconcile.Request
		members, _ := r.groupMembers(ctx, ns, name)
		for _, m := range members {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(m)})
		}
		return reqs
	}
	return nil
}

func (r *ServiceReconciler) proxies() *proxies {
	return newProxies(r.Client, r.ControlPlane, r.Proxy, r.Now)
}

// WantsExposure reports whether svc asks to be on the tailnet.
func WantsExposure(svc *corev1.Service) bool {
	if svc.Annotations[contract.AnnotationExpose] == "true" {
		return true
	}
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer && ptrEq(svc.Spec.LoadBalancerClass, contract.LoadBalancerClass)
}

func isLBClass(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer && ptrEq(svc.Spec.LoadBalancerClass, contract.LoadBalancerClass)
}

func ptrEq(p *string, s string) bool { return p != nil && *p == s }

// Reconcile implements reconcile.Reconciler: get, withdraw (deleted or no
// longer asking), finalizer, validate, proxy, report.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, result, err := r.reconcile(ctx, req)
	countReconcile("service", result, err)
	return requeueOnConflict(res, err)
}

func (r *ServiceReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, string, error) {
	svc := &corev1.Service{}
	if err := r.Client.Get(ctx, req.NamespacedName, svc); err != nil {
		return ctrl.Result{}, "", client.IgnoreNotFound(err)
	}
	p := r.proxies()
	if !svc.DeletionTimestamp.IsZero() || !WantsExposure(svc) {
		if !controllerutil.ContainsFinalizer(svc, ServiceFinalizer) {
			return ctrl.Result{}, "", nil
		}
		if err := r.withdraw(ctx, p, svc); err != nil {
			return ctrl.Result{}, "", err
		}
		return ctrl.Result{}, "removed", nil
	}
	if !controllerutil.ContainsFinalizer(svc, ServiceFinalizer) {
		patch := client.MergeFromWithOptions(svc.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(svc, ServiceFinalizer)
		if err := r.Client.Patch(ctx, svc, patch); err != nil {
			return ctrl.Result{}, "", fmt.Errorf("adding finalizer: %w", err)
		}
	}
	if group := svc.Annotations[contract.AnnotationProxyGroup]; group != "" {
		return r.reconcileGroup(ctx, p, svc, group)
	}
	// A Service that left a group leaves that group's proxy to the
	// group's other members, or to nobody.
	if err := r.sweepGroups(ctx, p, svc.Namespace); err != nil {
		return ctrl.Result{}, "", err
	}
	spec, reason, msg := r.serviceSpec(ctx, svc)
	if reason != "" {
		return r.invalid(ctx, p, svc, reason, msg)
	}
	st, err := p.ensure(ctx, spec)
	if err != nil {
		return ctrl.Result{}, "", errors.Join(err, r.report(ctx, svc, nil, ReasonProxyFailed, err.Error()))
	}
	return r.reportState(ctx, svc, st)
}

// reportState reports a proxy's state on svc.
func (r *ServiceReconciler) reportState(ctx context.Context, svc *corev1.Service, st *proxyState) (ctrl.Result, string, error) {
	if !st.Ready() {
		return ctrl.Result{RequeueAfter: notReadyRecheck}, "waiting", r.report(ctx, svc, st, ReasonProxyPending, st.notReadyMessage())
	}
	return ctrl.Result{}, "ready", r.report(ctx, svc, st, ReasonExposed, "exposed on the tailnet as "+st.FQDN)
}

// invalid reports bad input and removes whatever was made for svc before,
// so that nothing half-made stays behind.
func (r *ServiceReconciler) invalid(ctx context.Context, p *proxies, svc *corev1.Service, reason, msg string) (ctrl.Result, string, error) {
	if err := p.removeAllOf(ctx, kindService, svc.UID); err != nil {
		return ctrl.Result{}, "", err
	}
	return ctrl.Result{}, "invalid", r.report(ctx, svc, nil, reason, msg)
}

// withdraw removes svc's node and proxy (or its place in its group's),
// what the operator reported on it, and then its finalizer.
func (r *ServiceReconciler) withdraw(ctx context.Context, p *proxies, svc *corev1.Service) error {
	if err := p.removeAllOf(ctx, kindService, svc.UID); err != nil {
		return err
	}
	if err := r.sweepGroups(ctx, p, svc.Namespace); err != nil {
		return err
	}
	if group := svc.Annotations[contract.AnnotationProxyGroup]; group != "" {
		if _, _, err := r.ensureGroup(ctx, p, svc.Namespace, group); err != nil {
			return err
		}
	}
	if err := r.clearReport(ctx, svc); err != nil {
		return err
	}
	patch := client.MergeFromWithOptions(svc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(svc, ServiceFinalizer)
	if err := r.Client.Patch(ctx, svc, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("removing finalizer: %w", err)
	}
	r.Recorder.Event(svc, corev1.EventTypeNormal, "Withdrawn", "removed from the tailnet")
	return nil
}

// serviceHostname is the tailnet hostname svc asks for.
func serviceHostname(svc *corev1.Service) string {
	if h := svc.Annotations[contract.AnnotationHostname]; h != "" {
		return h
	}
	return svc.Namespace + "-" + svc.Name
}

// forwards are svc's ports as proxy forwards to its cluster IP, or a
// reason and message saying why it cannot be forwarded.
func forwards(svc *corev1.Service) ([]proxyconfig.Forward, string, string) {
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		return nil, ReasonUnsupported, "an ExternalName Service has no cluster IP to forward to; expose a Service with a selector"
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		return nil, ReasonUnsupported, "a headless Service (clusterIP: None) has no cluster IP to forward to; expose a Service with a cluster IP"
	case svc.Spec.ClusterIP == "":
		return nil, ReasonProxyPending, "waiting for the Service's cluster IP"
	case len(svc.Spec.Ports) == 0:
		return nil, ReasonUnsupported, "the Service has no ports"
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		return nil, ReasonUnsupported, fmt.Sprintf("cluster IP %q is not an IP address", svc.Spec.ClusterIP)
	}
	var out []proxyconfig.Forward
	for _, sp := range svc.Spec.Ports {
		proto := string(sp.Protocol)
		if proto == "" {
			proto = proxyconfig.ProtocolTCP
		}
		if proto != proxyconfig.ProtocolTCP && proto != proxyconfig.ProtocolUDP {
			return nil, ReasonUnsupported, fmt.Sprintf("port %d: protocol %s is not TCP or UDP", sp.Port, proto)
		}
		out = append(out, proxyconfig.Forward{
			Service:  svc.Namespace + "/" + svc.Name,
			Protocol: proto,
			Port:     uint16(sp.Port),
			Target:   net.JoinHostPort(ip.String(), strconv.Itoa(int(sp.Port))),
		})
	}
	return out, "", ""
}

// checkTags parses a tags annotation, falls back to def, and checks the
// policy lets the tailnet own them.
func checkTags(ctx context.Context, cp controlplane.Client, annotation string, def []string) ([]string, string, string) {
	tags, err := ParseTags(annotation)
	if err != nil {
		return nil, ReasonInvalidTags, fmt.Sprintf("annotation %s: %v", contract.AnnotationTags, err)
	}
	eff := tags
	if len(eff) == 0 {
		eff = def
	}
	if bad := unownedTags(ctx, cp, eff); len(bad) > 0 {
		return nil, ReasonTagsNotOwned, fmt.Sprintf("the tailnet policy's tagOwners does not list %s, so no node may carry it; add it to the policy or set %s", strings.Join(bad, ", "), contract.AnnotationTags)
	}
	return slices.Sorted(slices.Values(eff)), "", ""
}

// serviceSpec is the proxy svc asks for, or a reason and message saying
// what is wrong with it.
func (r *ServiceReconciler) serviceSpec(ctx context.Context, svc *corev1.Service) (*proxySpec, string, string) {
	host := serviceHostname(svc)
	if err := proxyconfig.ValidHostname(host); err != nil {
		return nil, ReasonInvalidHostname, fmt.Sprintf("hostname (annotation %s, or <namespace>-<name>): %v", contract.AnnotationHostname, err)
	}
	fw, reason, msg := forwards(svc)
	if reason != "" {
		return nil, reason, msg
	}
	tags, reason, msg := checkTags(ctx, r.ControlPlane, svc.Annotations[contract.AnnotationTags], r.Proxy.DefaultTags)
	if reason != "" {
		return nil, reason, msg
	}
	res, err := proxyResources(svc.Annotations, r.Proxy.Resources)
	if err != nil {
		return nil, ReasonInvalidResources, err.Error()
	}
	return &proxySpec{
		Name:      proxyName("ts", svc.Namespace, svc.Name),
		Owner:     proxyOwner{Kind: kindService, Namespace: svc.Namespace, Name: svc.Name, UID: svc.UID},
		Tags:      tags,
		Config:    proxyconfig.Config{Hostname: host, Forwards: fw},
		Resources: res,
	}, "", ""
}

// groupMembers are the Services of namespace ns in group that want
// exposure, by name.
func (r *ServiceReconciler) groupMembers(ctx context.Context, ns, group string) ([]*corev1.Service, error) {
	var l corev1.ServiceList
	if err := r.Client.List(ctx, &l, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("listing services of %s: %w", ns, err)
	}
	var out []*corev1.Service
	for i := range l.Items {
		s := &l.Items[i]
		if s.Annotations[contract.AnnotationProxyGroup] == group && s.DeletionTimestamp.IsZero() && WantsExposure(s) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// reconcileGroup exposes svc through the proxy its group shares.
func (r *ServiceReconciler) reconcileGroup(ctx context.Context, p *proxies, svc *corev1.Service, group string) (ctrl.Result, string, error) {
	// A Service that joined a group leaves its own proxy.
	if err := p.removeAllOf(ctx, kindService, svc.UID); err != nil {
		return ctrl.Result{}, "", err
	}
	if err := r.sweepGroups(ctx, p, svc.Namespace); err != nil {
		return ctrl.Result{}, "", err
	}
	st, problems, err := r.ensureGroup(ctx, p, svc.Namespace, group)
	if err != nil {
		return ctrl.Result{}, "", errors.Join(err, r.report(ctx, svc, nil, ReasonProxyFailed, err.Error()))
	}
	if pr, ok := problems[svc.Name]; ok {
		return ctrl.Result{}, "invalid", r.report(ctx, svc, nil, pr[0], pr[1])
	}
	if st == nil {
		return ctrl.Result{}, "invalid", nil
	}
	return r.reportState(ctx, svc, st)
}

// ensureGroup makes the proxy of group from its members' ports, leaving
// out members whose input is bad (returned by name: reason, message), and
// removes it when no member is left.
func (r *ServiceReconciler) ensureGroup(ctx context.Context, p *proxies, ns, group string) (*proxyState, map[string][2]string, error) {
	name := proxyName("ts-group", ns, group)
	members, err := r.groupMembers(ctx, ns, group)
	if err != nil {
		return nil, nil, err
	}
	problems := map[string][2]string{}
	if err := proxyconfig.ValidHostname(group); err != nil {
		for _, m := range members {
			problems[m.Name] = [2]string{ReasonInvalidHostname, fmt.Sprintf("proxy group (annotation %s) is the node's hostname: %v", contract.AnnotationProxyGroup, err)}
		}
		members = nil
	}
	var (
		fws      []proxyconfig.Forward
		tags     []string
		res      *corev1.ResourceRequirements
		included int
	)
	for _, m := range members {
		fw, reason, msg := forwards(m)
		if reason == "" {
			for _, f := range fw {
				if i := slices.IndexFunc(fws, func(o proxyconfig.Forward) bool { return o.Port == f.Port && o.Protocol == f.Protocol }); i >= 0 {
					reason, msg = ReasonPortConflict, fmt.Sprintf("%s port %d is already forwarded for %s in proxy group %s", f.Protocol, f.Port, fws[i].Service, group)
					break
				}
			}
		}
		var t []string
		if reason == "" {
			t, reason, msg = checkTags(ctx, r.ControlPlane, m.Annotations[contract.AnnotationTags], r.Proxy.DefaultTags)
		}
		if reason == "" && res == nil {
			var err error
			if res, err = proxyResources(m.Annotations, r.Proxy.Resources); err != nil {
				reason, msg = ReasonInvalidResources, err.Error()
			}
		}
		if reason != "" {
			problems[m.Name] = [2]string{reason, msg}
			continue
		}
		included++
		fws = append(fws, fw...)
		for _, x := range t {
			if !slices.Contains(tags, x) {
				tags = append(tags, x)
			}
		}
	}
	if included == 0 {
		return nil, problems, p.remove(ctx, name)
	}
	slices.Sort(tags)
	st, err := p.ensure(ctx, &proxySpec{
		Name:      name,
		Owner:     proxyOwner{Kind: kindProxyGroup, Namespace: ns, Name: group},
		Tags:      tags,
		Config:    proxyconfig.Config{Hostname: group, Forwards: fws},
		Resources: res,
	})
	return st, problems, err
}

// sweepGroups removes the group proxies of namespace ns that no Service
// asks for any more.
func (r *ServiceReconciler) sweepGroups(ctx context.Context, p *proxies, ns string) error {
	var deps appsv1.DeploymentList
	if err := r.Client.List(ctx, &deps, client.InNamespace(p.opts.Namespace), client.MatchingLabels{
		contract.LabelManagedBy: ManagedByValue, LabelOwnerKind: kindProxyGroup, LabelOwnerNamespace: ns,
	}); err != nil {
		return fmt.Errorf("listing group proxies: %w", err)
	}
	for i := range deps.Items {
		d := &deps.Items[i]
		group := d.Annotations[AnnotationOwnerName]
		members, err := r.groupMembers(ctx, ns, group)
		if err != nil {
			return err
		}
		if len(members) == 0 {
			if err := p.remove(ctx, d.Labels[LabelProxy]); err != nil {
				return err
			}
		}
	}
	return nil
}

// report writes what the operator knows onto svc: the label and
// annotations when it is exposed, the TailnetExposed condition, the
// load balancer status for tailscale-class Services, and an Event when the
// condition changes. It writes only what differs.
func (r *ServiceReconciler) report(ctx context.Context, svc *corev1.Service, st *proxyState, reason, msg string) error {
	labels, annotations := maps.Clone(svc.Labels), maps.Clone(svc.Annotations)
	if labels == nil {
		labels = map[string]string{}
	}
	if annotations == nil {
		annotations = map[string]string{}
	}
	if st != nil && st.FQDN != "" {
		labels[contract.LabelExposed] = "true"
		annotations[contract.AnnotationTailnetFQDN] = st.FQDN
		annotations[contract.AnnotationTailnetIPs] = joinAddrs(st.IPs)
	} else {
		delete(labels, contract.LabelExposed)
		delete(annotations, contract.AnnotationTailnetFQDN)
		delete(annotations, contract.AnnotationTailnetIPs)
	}
	if !maps.Equal(labels, svc.Labels) || !maps.Equal(annotations, svc.Annotations) {
		patch := client.MergeFrom(svc.DeepCopy())
		svc.Labels, svc.Annotations = labels, annotations
		if err := r.Client.Patch(ctx, svc, patch); err != nil {
			return fmt.Errorf("reporting on the service: %w", err)
		}
	}
	status := svc.Status.DeepCopy()
	cond := metav1.Condition{Type: contract.ConditionTailnetExposed, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: svc.Generation}
	if reason == ReasonExposed {
		cond.Status = metav1.ConditionTrue
	}
	before := apimeta.FindStatusCondition(status.Conditions, cond.Type)
	changed := before == nil || before.Reason != cond.Reason || before.Message != cond.Message
	apimeta.SetStatusCondition(&status.Conditions, cond)
	if isLBClass(svc) {
		status.LoadBalancer.Ingress = lbIngress(st)
	}
	if !equality.Semantic.DeepEqual(&svc.Status, status) {
		svc.Status = *status
		if err := r.Client.Status().Update(ctx, svc); err != nil {
			return fmt.Errorf("updating service status: %w", err)
		}
	}
	if changed {
		r.Recorder.Event(svc, exposeEventType(reason), reason, msg)
	}
	return nil
}

// clearReport removes what report wrote.
func (r *ServiceReconciler) clearReport(ctx context.Context, svc *corev1.Service) error {
	_, hasL := svc.Labels[contract.LabelExposed]
	_, hasF := svc.Annotations[contract.AnnotationTailnetFQDN]
	_, hasI := svc.Annotations[contract.AnnotationTailnetIPs]
	if hasL || hasF || hasI {
		patch := client.MergeFrom(svc.DeepCopy())
		delete(svc.Labels, contract.LabelExposed)
		delete(svc.Annotations, contract.AnnotationTailnetFQDN)
		delete(svc.Annotations, contract.AnnotationTailnetIPs)
		if err := r.Client.Patch(ctx, svc, patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("clearing the service's report: %w", err)
		}
	}
	status := svc.Status.DeepCopy()
	apimeta.RemoveStatusCondition(&status.Conditions, contract.ConditionTailnetExposed)
	if isLBClass(svc) {
		// Only ours: another controller's load balancer status stays.
		status.LoadBalancer.Ingress = nil
	}
	if !equality.Semantic.DeepEqual(&svc.Status, status) {
		svc.Status = *status
		if err := r.Client.Status().Update(ctx, svc); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("clearing service status: %w", err)
		}
	}
	return nil
}

func lbIngress(st *proxyState) []corev1.LoadBalancerIngress {
	if st == nil || st.FQDN == "" {
		return nil
	}
	var out []corev1.LoadBalancerIngress
	for _, ip := range st.IPs {
		// IPMode as the API server defaults it, so that an unchanged
		// status compares equal and is not written again.
		out = append(out, corev1.LoadBalancerIngress{IP: ip.String(), Hostname: st.FQDN, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)})
	}
	if len(out) == 0 {
		out = append(out, corev1.LoadBalancerIngress{Hostname: st.FQDN})
	}
	return out
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, 0, len(ips))
	for _, ip := range ips {
		s = append(s, ip.String())
	}
	return strings.Join(s, ",")
}

// exposeEventType is Normal for progress and Warning for input to fix.
func exposeEventType(reason string) string {
	switch reason {
	case ReasonExposed, ReasonProxyPending:
		return corev1.EventTypeNormal
	}
	return corev1.EventTypeWarning
}
