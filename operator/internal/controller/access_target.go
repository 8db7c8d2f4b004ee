package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"tsymbiote.dhouti.dev/controlplane"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
)

// AccessTargetReconciler reports whether each target's group is in the
// tailnet policy (Ready) and how many grants are active, and keeps the
// requests-by-phase gauges.
type AccessTargetReconciler struct {
	client.Client
	Policy   controlplane.PolicyEditor
	Recorder record.EventRecorder
	Now      func() time.Time
	// Recheck is how often the policy is read again; 2m when zero.
	Recheck time.Duration
}

// SetupWithManager registers the controller; a request's change
// reconciles its target.
func (r *AccessTargetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&accessv1.AccessTarget{}).
		Watches(&accessv1.AccessRequest{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			ar, ok := o.(*accessv1.AccessRequest)
			if !ok {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: ar.Spec.Target}}}
		})).
		Named("accesstarget").
		Complete(r)
}

// Reconcile updates one target's status, only when it changed.
func (r *AccessTargetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	t := &accessv1.AccessTarget{}
	if err := r.Get(ctx, req.NamespacedName, t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var list accessv1.AccessRequestList
	if err := r.List(ctx, &list); err != nil {
		return ctrl.Result{}, err
	}
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	var active int32
	byPhase := map[accessv1.Phase]float64{}
	var totalActive float64
	for i := range list.Items {
		o := &list.Items[i]
		byPhase[o.Status.Phase]++
		if o.Status.Phase == accessv1.PhaseActive {
			totalActive++
			if o.Spec.Target == t.Name && o.Status.ExpiresAt != nil && now.Before(o.Status.ExpiresAt.Time) {
				active++
			}
		}
	}
	for _, p := range []accessv1.Phase{"", accessv1.PhasePending, accessv1.PhaseApproved, accessv1.PhaseActive, accessv1.PhaseDenied,
		accessv1.PhaseExpired, accessv1.PhaseRevoked, accessv1.PhaseFailed} {
		accessRequestsByPhase.WithLabelValues(string(p)).Set(byPhase[p])
	}
	accessGrantsActive.Set(totalActive)

	st := t.Status.DeepCopy()
	st.ActiveGrants = active
	st.ObservedGeneration = t.Generation
	cond := metav1.Condition{Type: accessv1.ConditionReady, ObservedGeneration: t.Generation}
	p, err := r.Policy.GetPolicy(ctx)
	switch {
	case err != nil:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionUnknown, accessv1.ReasonPolicyError, fmt.Sprintf("reading the policy: %v", err)
	default:
		if _, err := controlplane.GroupMembers([]byte(p.Body), t.Spec.Group); err != nil {
			cond.Status, cond.Reason = metav1.ConditionFalse, accessv1.ReasonGroupMissing
			cond.Message = err.Error()
			if errors.Is(err, controlplane.ErrGroupMissing) {
				cond.Message = fmt.Sprintf("group %q is not in the tailnet policy: add it (\"%s\": []) to grant it", t.Spec.Group, t.Spec.Group)
			}
		} else {
			cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, accessv1.ReasonGroupFound, fmt.Sprintf("group %q is in the tailnet policy", t.Spec.Group)
		}
	}
	prev := meta.FindStatusCondition(st.Conditions, accessv1.ConditionReady)
	changedCond := prev == nil || prev.Status != cond.Status || prev.Message != cond.Message
	meta.SetStatusCondition(&st.Conditions, cond)
	if !equality.Semantic.DeepEqual(st, &t.Status) {
		t.Status = *st
		if err := r.Status().Update(ctx, t); err != nil {
			return requeueOnConflict(ctrl.Result{}, err)
		}
		if changedCond && r.Recorder != nil {
			typ := "Normal"
			if cond.Status != metav1.ConditionTrue {
				typ = "Warning"
			}
			r.Recorder.Event(t, typ, cond.Reason, cond.Message)
		}
	}
	recheck := r.Recheck
	if recheck == 0 {
		recheck = 2 * time.Minute
	}
	return ctrl.Result{RequeueAfter: recheck}, nil
}
