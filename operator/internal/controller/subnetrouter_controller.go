package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
	"tsymbiote.dhouti.dev/proto/contract"
)

// SubnetRouterFinalizer keeps a router's ConfigMap or SubnetRouter until
// its node and proxy are gone.
const SubnetRouterFinalizer = "tsymbiote.dhouti.dev/subnet-router"

const kindConfigMap = "ConfigMap"

// Reasons of subnet router conditions and Events.
const (
	ReasonInvalidRoutes   = "InvalidRoutes"
	ReasonRoutesPending   = "RoutesPending"
	ReasonApprovalFailed  = "ApprovalFailed"
	ReasonRoutesApproved  = "RoutesApproved"
	conditionReady        = "Ready"
	routeApprovalRecheck  = 2 * time.Second
	approvedRoutesRecheck = 5 * time.Minute
)

// SubnetRouterReconciler runs subnet routers: one for the ConfigMap
// tailscale-subnet-router in the operator's namespace, one per
// SubnetRouter resource. It approves their routes through the control
// plane and withdraws approvals of routes removed.
type SubnetRouterReconciler struct {
	Client       client.Client
	ControlPlane controlplane.Client
	Recorder     record.EventRecorder
	Proxy        ProxyOptions
	Now          func() time.Time
}

// +kubebuilder:rbac:groups=tsymbiote.dhouti.dev,resources=subnetrouters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=tsymbiote.dhouti.dev,resources=subnetrouters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tsymbiote.dhouti.dev,resources=subnetrouters/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;update;patch

// SetupWithManager registers two controllers with mgr: one for the
// ConfigMap, one for SubnetRouters.
func (r *SubnetRouterReconciler) SetupWithManager(mgr ctrl.Manager) error {
	isOurs := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Proxy.Namespace && o.GetName() == contract.SubnetRouterConfigMap
	})
	if err := ctrl.NewControllerManagedBy(mgr).
		Named("subnet-router-configmap").
		For(&corev1.ConfigMap{}, builder.WithPredicates(isOurs)).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(routerOwner(kindConfigMap))).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(routerOwner(kindConfigMap))).
		Complete(r); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("subnet-router").
		For(&v1alpha1.SubnetRouter{}).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(routerOwner(kindSubnetRouter))).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(routerOwner(kindSubnetRouter))).
		Complete(r)
}

// Reconcile implements reconcile.Reconciler for both sources: a request
// with a namespace is the ConfigMap's, one without a (cluster-scoped)
// SubnetRouter's.
func (r *SubnetRouterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Namespace != "" {
		return r.reconcileConfigMap(ctx, req)
	}
	return r.reconcileResource(ctx, req)
}

func routerOwner(kind string) handler.MapFunc {
	return func(_ context.Context, obj client.Object) []reconcile.Request {
		l := obj.GetLabels()
		if l[LabelOwnerKind] != kind {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: l[LabelOwnerNamespace], Name: obj.GetAnnotations()[AnnotationOwnerName]}}}
	}
}

func (r *SubnetRouterReconciler) proxies() *proxies {
	return newProxies(r.Client, r.ControlPlane, r.Proxy, r.Now)
}

// router is one router's input, from either source.
type router struct {
	owner    proxyOwner
	hostname string
	tags     string // as written: comma separated
	routes   []string
}

// routerResult is what routerReconcile found, for the source to report.
type routerResult struct {
	reason, msg string
	state       *proxyState
	approved    []netip.Prefix
}

// ParseRoutes parses a router's routes, naming the first invalid CIDR and
// the first pair that overlaps (a route inside another is a mistake: the
// wider one already carries it).
func ParseRoutes(routes []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range routes {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.96.0.0/12", s)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%q has host bits set: did you mean %s?", s, p.Masked())
		}
		for _, q := range out {
			if q.Overlaps(p) {
				return nil, fmt.Errorf("%s overlaps %s", p, q)
			}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("no routes given")
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out, nil
}

// reconcileRouter makes the router's proxy and approves its routes. A
// reason in the result is bad input or progress to report.
func (r *SubnetRouterReconciler) reconcileRouter(ctx context.Context, p *proxies, rt *router) (routerResult, error) {
	routes, err := ParseRoutes(rt.routes)
	if err != nil {
		return routerResult{reason: ReasonInvalidRoutes, msg: "routes: " + err.Error()}, p.removeAllOf(ctx, rt.owner.Kind, rt.owner.UID)
	}
	if err := proxyconfig.ValidHostname(rt.hostname); err != nil {
		return routerResult{reason: ReasonInvalidHostname, msg: "hostname: " + err.Error()}, p.removeAllOf(ctx, rt.owner.Kind, rt.owner.UID)
	}
	tags, reason, msg := checkTags(ctx, r.ControlPlane, rt.tags, r.Proxy.DefaultTags)
	if reason != "" {
		return routerResult{reason: reason, msg: msg}, p.removeAllOf(ctx, rt.owner.Kind, rt.owner.UID)
	}
	st, err := p.ensure(ctx, &proxySpec{
		Name:   proxyName("ts-router", rt.owner.Namespace, rt.owner.Name),
		Owner:  rt.owner,
		Tags:   tags,
		Config: proxyconfig.Config{Hostname: rt.hostname, AdvertiseRoutes: routes},
	})
	if err != nil {
		return routerResult{reason: ReasonProxyFailed, msg: err.Error()}, err
	}
	res := routerResult{state: st}
	ra, rerr := controlplane.Routes(r.ControlPlane)
	if !st.Ready() {
		res.reason, res.msg = ReasonProxyPending, st.notReadyMessage()
		if rerr == nil && st.DeviceID != "" {
			// A removed route loses its approval now, before the proxy
			// stops advertising it.
			return res, r.withdrawRemoved(ctx, ra, st.DeviceID, routes)
		}
		return res, nil
	}
	if rerr != nil {
		// A client that cannot approve is configuration to report, not
		// a failure to retry.
		res.reason, res.msg = ReasonApprovalFailed, rerr.Error()
		return res, nil //nolint:nilerr // reported, not retried
	}
	adv, approved, err := ra.Routes(ctx, st.DeviceID)
	if err != nil {
		controlPlaneErrors.WithLabelValues("routes").Inc()
		return routerResult{reason: ReasonApprovalFailed, msg: err.Error(), state: st}, fmt.Errorf("reading routes of node %s: %w", st.DeviceID, err)
	}
	// Approve exactly the routes asked for: autoApprovers may already have
	// (then nothing is written), and a route removed loses its approval.
	if !slices.Equal(approved, routes) {
		if err := ra.SetApprovedRoutes(ctx, st.DeviceID, routes); err != nil {
			controlPlaneErrors.WithLabelValues("approve_routes").Inc()
			return routerResult{reason: ReasonApprovalFailed, msg: err.Error(), state: st}, err
		}
		routesApproved.Inc()
		approved = routes
	}
	res.approved = approved
	for _, want := range routes {
		if !slices.Contains(adv, want) {
			res.reason, res.msg = ReasonRoutesPending, fmt.Sprintf("waiting for the node to advertise %s (it advertises %v)", want, adv)
			return res, nil
		}
	}
	res.reason, res.msg = ReasonRoutesApproved, fmt.Sprintf("%s advertises and is approved for %v", st.FQDN, routes)
	return res, nil
}

// withdrawRemoved removes from the node's approved routes those not in
// routes.
func (r *SubnetRouterReconciler) withdrawRemoved(ctx context.Context, ra controlplane.RouteApprover, id string, routes []netip.Prefix) error {
	_, approved, err := ra.Routes(ctx, id)
	if err != nil {
		controlPlaneErrors.WithLabelValues("routes").Inc()
		return fmt.Errorf("reading routes of node %s: %w", id, err)
	}
	keep := slices.DeleteFunc(slices.Clone(approved), func(p netip.Prefix) bool { return !slices.Contains(routes, p) })
	if len(keep) == len(approved) {
		return nil
	}
	if err := ra.SetApprovedRoutes(ctx, id, keep); err != nil {
		controlPlaneErrors.WithLabelValues("approve_routes").Inc()
		return err
	}
	routesApproved.Inc()
	return nil
}

func (res *routerResult) requeue() ctrl.Result {
	switch res.reason {
	case ReasonProxyPending, ReasonRoutesPending:
		return ctrl.Result{RequeueAfter: routeApprovalRecheck}
	case ReasonRoutesApproved:
		// Someone may withdraw an approval by hand; look again now and
		// then.
		return ctrl.Result{RequeueAfter: approvedRoutesRecheck}
	}
	return ctrl.Result{}
}

func (res *routerResult) result() string {
	switch res.reason {
	case ReasonRoutesApproved:
		return "ready"
	case ReasonProxyPending, ReasonRoutesPending:
		return "waiting"
	}
	return "invalid"
}

// reconcileConfigMap runs the router of the ConfigMap.
func (r *SubnetRouterReconciler) reconcileConfigMap(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Namespace != r.Proxy.Namespace || req.Name != contract.SubnetRouterConfigMap {
		return ctrl.Result{}, nil
	}
	cm := &corev1.ConfigMap{}
	if err := r.Client.Get(ctx, req.NamespacedName, cm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	p := r.proxies()
	owner := proxyOwner{Kind: kindConfigMap, Namespace: cm.Namespace, Name: cm.Name, UID: cm.UID}
	if !cm.DeletionTimestamp.IsZero() {
		err := r.finalize(ctx, p, owner, cm)
		countReconcile("subnetrouter", "removed", err)
		return ctrl.Result{}, err
	}
	if err := r.addFinalizer(ctx, cm); err != nil {
		return requeueOnConflict(ctrl.Result{}, err)
	}
	host := cm.Data["hostname"]
	if host == "" {
		host = cm.Name
	}
	res, err := r.reconcileRouter(ctx, p, &router{owner: owner, hostname: host, tags: cm.Data["tags"], routes: strings.Split(cm.Data[contract.SubnetRouterRoutesKey], ",")})
	countReconcile("subnetrouter", res.result(), err)
	return requeueOnConflict(res.requeue(), errors.Join(err, r.reportConfigMap(ctx, cm, &res)))
}

func (r *SubnetRouterReconciler) addFinalizer(ctx context.Context, obj client.Object) error {
	if controllerutil.ContainsFinalizer(obj, SubnetRouterFinalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(obj.DeepCopyObject().(client.Object), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(obj, SubnetRouterFinalizer)
	if err := r.Client.Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	return nil
}

func (r *SubnetRouterReconciler) finalize(ctx context.Context, p *proxies, owner proxyOwner, obj client.Object) error {
	if !controllerutil.ContainsFinalizer(obj, SubnetRouterFinalizer) {
		return nil
	}
	if err := p.removeAllOf(ctx, owner.Kind, owner.UID); err != nil {
		return err
	}
	patch := client.MergeFromWithOptions(obj.DeepCopyObject().(client.Object), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(obj, SubnetRouterFinalizer)
	if err := r.Client.Patch(ctx, obj, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("removing finalizer: %w", err)
	}
	return nil
}

// reportConfigMap writes the router's status as annotations on the
// ConfigMap, and an Event when it changes.
func (r *SubnetRouterReconciler) reportConfigMap(ctx context.Context, cm *corev1.ConfigMap, res *routerResult) error {
	a := maps.Clone(cm.Annotations)
	if a == nil {
		a = map[string]string{}
	}
	status := "Ready"
	if res.reason != ReasonRoutesApproved {
		status = res.reason + ": " + res.msg
	}
	changed := a[contract.AnnotationExposeStatus] != status
	a[contract.AnnotationExposeStatus] = status
	if st := res.state; st != nil && st.FQDN != "" {
		a[contract.AnnotationTailnetFQDN] = st.FQDN
		a[contract.AnnotationTailnetIPs] = joinAddrs(st.IPs)
	} else {
		delete(a, contract.AnnotationTailnetFQDN)
		delete(a, contract.AnnotationTailnetIPs)
	}
	if !maps.Equal(a, cm.Annotations) {
		patch := client.MergeFrom(cm.DeepCopy())
		cm.Annotations = a
		if err := r.Client.Patch(ctx, cm, patch); err != nil {
			return fmt.Errorf("reporting on the configmap: %w", err)
		}
	}
	if changed && r.Recorder != nil {
		r.Recorder.Event(cm, routerEventType(res.reason), res.reason, res.msg)
	}
	return nil
}

func routerEventType(reason string) string {
	switch reason {
	case ReasonRoutesApproved, ReasonProxyPending, ReasonRoutesPending:
		return corev1.EventTypeNormal
	}
	return corev1.EventTypeWarning
}

// reconcileResource runs the router of a SubnetRouter.
func (r *SubnetRouterReconciler) reconcileResource(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	sr := &v1alpha1.SubnetRouter{}
	if err := r.Client.Get(ctx, types.NamespacedName{Name: req.Name}, sr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	p := r.proxies()
	owner := proxyOwner{Kind: kindSubnetRouter, Name: sr.Name, UID: sr.UID}
	if !sr.DeletionTimestamp.IsZero() {
		err := r.finalize(ctx, p, owner, sr)
		countReconcile("subnetrouter", "removed", err)
		return ctrl.Result{}, err
	}
	if err := r.addFinalizer(ctx, sr); err != nil {
		return requeueOnConflict(ctrl.Result{}, err)
	}
	host := sr.Spec.Hostname
	if host == "" {
		host = sr.Name
	}
	res, err := r.reconcileRouter(ctx, p, &router{owner: owner, hostname: host, tags: strings.Join(sr.Spec.Tags, ","), routes: sr.Spec.Routes})
	countReconcile("subnetrouter", res.result(), err)
	return requeueOnConflict(res.requeue(), errors.Join(err, r.reportResource(ctx, sr, &res)))
}

func (r *SubnetRouterReconciler) reportResource(ctx context.Context, sr *v1alpha1.SubnetRouter, res *routerResult) error {
	s := sr.Status.DeepCopy()
	s.ObservedGeneration = sr.Generation
	cond := metav1.Condition{Type: conditionReady, Status: metav1.ConditionFalse, Reason: res.reason, Message: res.msg, ObservedGeneration: sr.Generation}
	if res.reason == ReasonRoutesApproved {
		cond.Status = metav1.ConditionTrue
	}
	before := apimeta.FindStatusCondition(s.Conditions, conditionReady)
	changed := before == nil || before.Reason != cond.Reason || before.Message != cond.Message
	apimeta.SetStatusCondition(&s.Conditions, cond)
	s.FQDN, s.Addresses = "", nil
	if st := res.state; st != nil {
		s.FQDN = st.FQDN
		for _, ip := range st.IPs {
			s.Addresses = append(s.Addresses, ip.String())
		}
	}
	s.ApprovedRoutes = nil
	for _, p := range res.approved {
		s.ApprovedRoutes = append(s.ApprovedRoutes, p.String())
	}
	if !equality.Semantic.DeepEqual(&sr.Status, s) {
		sr.Status = *s
		if err := r.Client.Status().Update(ctx, sr); err != nil {
			return fmt.Errorf("updating subnet router status: %w", err)
		}
	}
	if changed && r.Recorder != nil {
		r.Recorder.Event(sr, routerEventType(res.reason), res.reason, res.msg)
	}
	return nil
}
