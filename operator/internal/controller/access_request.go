package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"tsymbiote.dhouti.dev/controlplane"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
)

// +kubebuilder:rbac:groups=access.tsymbiote.dhouti.dev,resources=accessrequests;accesstargets,verbs=get;list;watch
// +kubebuilder:rbac:groups=access.tsymbiote.dhouti.dev,resources=accessrequests/status;accesstargets/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Actor names the operator in histories.
const accessOperator = "tsymbiote-operator"

// AccessRequestReconciler drives AccessRequests through named phases:
// validate (target, duration, login, group) -> decide (a decision or an
// auto-approve rule) -> grant (the login into the group, by compare-and-swap)
// -> wait for the expiry (RequeueAfter by the injected clock) -> revoke (at
// expiry or on a Revoke decision) -> record. Every step writes the status
// (history, phase, condition) before the next, so a crash between a policy
// write and its status resumes at the same step, and policy edits are
// idempotent: a login already in (or out of) the group is not written again.
//
// The group holds exactly the active grants: revoking a grant removes the
// login only when no other active grant puts it in the same group. Logins
// that were in the group before (not put there by a grant) are never added
// or removed by a grant of someone else.
//
// At start-up the informer's first list reconciles every request, so a
// grant that ended while the operator was down is revoked then.
type AccessRequestReconciler struct {
	client.Client
	Policy   controlplane.PolicyEditor
	Recorder record.EventRecorder
	Notifier *Notifier // nil: no notifications
	// Now is the clock; time.Now when nil. Tests inject theirs.
	Now func() time.Time
	// MaxDuration caps every target's maxDuration (--access-max-duration).
	MaxDuration time.Duration
	// TrustedAsserter is the Kubernetes user (the WebUI's ServiceAccount)
	// whose requests may be auto-approved: it asserts the requester from
	// WhoIs. Requests others create always need an approver.
	TrustedAsserter string
	// EditOptions tune the policy compare-and-swap (tests shorten it).
	EditOptions controlplane.EditOptions
}

func (r *AccessRequestReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// SetupWithManager registers the controller.
func (r *AccessRequestReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&accessv1.AccessRequest{}).
		Named("accessrequest").
		Complete(r)
}

// Reconcile runs the request's next phases until it waits for someone (a
// decision, the expiry) or ends.
func (r *AccessRequestReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := log.FromContext(ctx)
	for range 6 {
		ar := &accessv1.AccessRequest{}
		if err := r.Get(ctx, req.NamespacedName, ar); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		if ar.Status.Phase.Final() {
			return ctrl.Result{}, nil
		}
		tgt := &accessv1.AccessTarget{}
		if err := r.Get(ctx, types.NamespacedName{Name: ar.Spec.Target}, tgt); err != nil {
			if !apierrors.IsNotFound(err) {
				return ctrl.Result{}, err
			}
			tgt = nil
		}
		before := ar.Status.DeepCopy()
		wait, err := r.step(ctx, ar, tgt)
		if err != nil {
			return ctrl.Result{}, err
		}
		if ar.Status.Phase != before.Phase || len(ar.Status.History) != len(before.History) {
			ar.Status.ObservedGeneration = ar.Generation
			if err := r.Status().Update(ctx, ar); err != nil {
				return requeueOnConflict(ctrl.Result{}, err)
			}
			r.record(ctx, log, ar, tgt, before)
			continue
		}
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	return ctrl.Result{RequeueAfter: conflictRetry}, nil
}

// step runs the phase ar is in, changing ar.Status; it returns how long to
// wait when nothing changed.
func (r *AccessRequestReconciler) step(ctx context.Context, ar *accessv1.AccessRequest, tgt *accessv1.AccessTarget) (time.Duration, error) {
	switch ar.Status.Phase {
	case "":
		return 0, r.validate(ctx, ar, tgt)
	case accessv1.PhasePending:
		return 0, r.decide(ctx, ar, tgt)
	case accessv1.PhaseApproved:
		if d := ar.Spec.Decision; d != nil && d.Action == accessv1.ActionRevoke {
			return 0, r.revoke(ctx, ar, tgt, accessv1.PhaseRevoked, d.By, d.Reason)
		}
		return 0, r.grant(ctx, ar, tgt)
	case accessv1.PhaseActive:
		if d := ar.Spec.Decision; d != nil && d.Action == accessv1.ActionRevoke {
			return 0, r.revoke(ctx, ar, tgt, accessv1.PhaseRevoked, d.By, d.Reason)
		}
		now := r.now()
		if exp := ar.Status.ExpiresAt; exp != nil && !now.Before(exp.Time) {
			return 0, r.revoke(ctx, ar, tgt, accessv1.PhaseExpired, accessOperator, "the grant's duration ended")
		}
		if exp := ar.Status.ExpiresAt; exp != nil {
			return exp.Sub(now), nil
		}
		// Active without an expiry cannot happen through this
		// controller; end it rather than grant forever.
		return 0, r.revoke(ctx, ar, tgt, accessv1.PhaseExpired, accessOperator, "no expiry recorded")
	}
	return 0, nil
}

// validate checks what the webhook cannot see or may have missed (it may
// be off): the target, the duration, the login among the control plane's
// users and the group in the policy.
func (r *AccessRequestReconciler) validate(ctx context.Context, ar *accessv1.AccessRequest, tgt *accessv1.AccessTarget) error {
	if err := r.check(ctx, ar, tgt); err != nil {
		var inv invalidError
		if !errors.As(err, &inv) {
			return err // transient: retried
		}
		r.fail(ar, inv.Error())
		return nil
	}
	ar.Status.Phase = accessv1.PhasePending
	by := ar.Spec.Requester
	if c := ar.Annotations[accessv1.AnnotationCreatedBy]; c != "" && c != accessv1.K8sUser(r.TrustedAsserter) {
		by += " (created by " + c + ")"
	}
	r.history(ar, accessv1.EventRequested, by, ar.Spec.Reason)
	setRequestReady(ar, metav1.ConditionFalse, accessv1.ReasonNotGranted, "waiting for a decision")
	return nil
}

// invalidError is a request that can never be granted.
type invalidError struct{ msg string }

func (e invalidError) Error() string { return e.msg }

func invalid(format string, args ...any) error { return invalidError{fmt.Sprintf(format, args...)} }

// CheckRequest is the validation both the controller and the webhook run;
// errors that are not a control-plane failure say what to fix.
func (r *AccessRequestReconciler) check(ctx context.Context, ar *accessv1.AccessRequest, tgt *accessv1.AccessTarget) error {
	return CheckRequest(ctx, r.Policy, ar, tgt, r.MaxDuration)
}

// CheckRequest checks ar against its target and the control plane: the
// target exists, the duration is within its maximum and max, a reason is
// given if required, the requester is a user of the tailnet, and the
// target's group is in the policy. Invalid requests return an error that
// IsInvalid recognizes; control plane failures return others.
func CheckRequest(ctx context.Context, pe controlplane.PolicyEditor, ar *accessv1.AccessRequest, tgt *accessv1.AccessTarget, max time.Duration) error {
	if tgt == nil {
		return invalid("unknown target %q: no AccessTarget of that name", ar.Spec.Target)
	}
	if err := CheckDuration(ar, tgt, max); err != nil {
		return err
	}
	if tgt.Spec.RequireReason && strings.TrimSpace(ar.Spec.Reason) == "" {
		return invalid("target %q requires a reason (spec.reason)", tgt.Name)
	}
	if pe == nil {
		return nil
	}
	logins, err := pe.ListLogins(ctx)
	if err != nil {
		return fmt.Errorf("checking the requester: %w", err)
	}
	if !slices.Contains(logins, ar.Spec.Requester) {
		return invalid("unknown login %q: the control plane has no such user", ar.Spec.Requester)
	}
	p, err := pe.GetPolicy(ctx)
	if err != nil {
		return fmt.Errorf("checking the group: %w", err)
	}
	if _, err := controlplane.GroupMembers([]byte(p.Body), tgt.Spec.Group); err != nil {
		if errors.Is(err, controlplane.ErrGroupMissing) {
			return invalid("target %q: group %q is not in the tailnet policy", tgt.Name, tgt.Spec.Group)
		}
		return invalid("target %q: %v", tgt.Name, err)
	}
	return nil
}

// CheckDuration checks the request's duration against its target's
// maximum and the operator's cap max (when not zero).
func CheckDuration(ar *accessv1.AccessRequest, tgt *accessv1.AccessTarget, max time.Duration) error {
	d := ar.Spec.Duration.Duration
	limit := tgt.Spec.MaxDuration.Duration
	if limit == 0 {
		limit = time.Hour
	}
	if max > 0 && max < limit {
		limit = max
	}
	if d <= 0 {
		return invalid("duration %v must be positive", d)
	}
	if d > limit {
		return invalid("duration %v is over the maximum %v of target %q", d, limit, tgt.Name)
	}
	return nil
}

// IsInvalid reports whether err says that a request is invalid (rather
// than that checking it failed).
func IsInvalid(err error) bool {
	var inv invalidError
	return errors.As(err, &inv)
}

// decide applies the decision, or an auto-approve rule, to a pending request.
func (r *AccessRequestReconciler) decide(ctx context.Context, ar *accessv1.AccessRequest, tgt *accessv1.AccessTarget) error {
	if d := ar.Spec.Decision; d != nil {
		switch d.Action {
		case accessv1.ActionApprove:
			r.approve(ar, accessv1.EventApproved, d.By, d.Reason)
		case accessv1.ActionDeny:
			ar.Status.Phase = accessv1.PhaseDenied
			r.history(ar, accessv1.EventDenied, d.By, d.Reason)
			setRequestReady(ar, metav1.ConditionFalse, accessv1.ReasonNotGranted, "denied")
		case accessv1.ActionRevoke:
			ar.Status.Phase = accessv1.PhaseRevoked
			ar.Status.EndedAt = ptrTime(r.now())
			r.history(ar, accessv1.EventRevoked, d.By, cmpOr(d.Reason, "cancelled before a decision"))
			setRequestReady(ar, metav1.ConditionFalse, accessv1.ReasonNotGranted, "cancelled")
		}
		return nil
	}
	if tgt == nil || ar.Annotations[accessv1.AnnotationCreatedBy] != accessv1.K8sUser(r.TrustedAsserter) || r.TrustedAsserter == "" {
		return nil // only requests whose requester the WebUI vouched for
	}
	for i, rule := range tgt.Spec.AutoApprove {
		if ar.Spec.Duration.Duration > rule.MaxDuration.Duration {
			continue
		}
		ok, err := r.matches(ctx, rule.Requesters, ar.Spec.Requester)
		if err != nil {
			return err
		}
		if ok {
			r.approve(ar, accessv1.EventAutoApproved, accessOperator, fmt.Sprintf("autoApprove rule %d", i))
			return nil
		}
	}
	return nil
}

// matches reports whether login is one of subjects (logins or policy groups).
func (r *AccessRequestReconciler) matches(ctx context.Context, subjects []string, login string) (bool, error) {
	return MatchesLogin(ctx, r.Policy, subjects, login)
}

// MatchesLogin reports whether login is one of subjects: the login itself or
// a policy group (group:x) that lists it in the current policy.
func MatchesLogin(ctx context.Context, pe controlplane.PolicyEditor, subjects []string, login string) (bool, error) {
	var policy []byte
	for _, s := range subjects {
		if s == login {
			return true, nil
		}
		if !strings.HasPrefix(s, accessv1.SubjectGroupPrefix) || pe == nil {
			continue
		}
		if policy == nil {
			p, err := pe.GetPolicy(ctx)
			if err != nil {
				return false, err
			}
			policy = []byte(p.Body)
		}
		if ms, err := controlplane.GroupMembers(policy, s); err == nil && slices.Contains(ms, login) {
			return true, nil
		}
	}
	return false, nil
}

func (r *AccessRequestReconciler) approve(ar *accessv1.AccessRequest, event, by, reason string) {
	ar.Status.Phase = accessv1.PhaseApproved
	ar.Status.ApprovedAt = ptrTime(r.now())
	r.history(ar, event, by, reason)
}

// grant puts the login into the group and starts the clock.
func (r *AccessRequestReconciler) grant(ctx context.Context, ar *accessv1.AccessRequest, tgt *accessv1.AccessTarget) error {
	if tgt == nil {
		r.fail(ar, fmt.Sprintf("unknown target %q: deleted before the grant", ar.Spec.Target))
		return nil
	}
	login, group := ar.Spec.Requester, tgt.Spec.Group
	res, err := r.edit(ctx, "grant", func(body string) (string, bool, error) {
		b, changed, err := controlplane.AddToGroup([]byte(body), group, login)
		return string(b), changed, err
	})
	if err != nil {
		if errors.Is(err, controlplane.ErrGroupMissing) || errors.Is(err, controlplane.ErrPolicyInvalid) {
			r.fail(ar, fmt.Sprintf("granting %s in %s: %v", login, group, err))
			return nil
		}
		return err
	}
	now := r.now()
	if res.Wrote && ar.Status.ApprovedAt != nil {
		accessApprovalToWrite.Observe(now.Sub(ar.Status.ApprovedAt.Time).Seconds())
	}
	ar.Status.Phase = accessv1.PhaseActive
	ar.Status.GrantedAt = ptrTime(now)
	ar.Status.ExpiresAt = ptrTime(now.Add(ar.Spec.Duration.Duration))
	r.history(ar, accessv1.EventGranted, accessOperator, fmt.Sprintf("%s added to %s until %s", login, group, ar.Status.ExpiresAt.UTC().Format(time.RFC3339)))
	setRequestReady(ar, metav1.ConditionTrue, accessv1.ReasonGranted, fmt.Sprintf("%s is in %s", login, group))
	return nil
}

// revoke takes the login out of the group unless another active grant
// keeps it there, and ends the request in phase.
func (r *AccessRequestReconciler) revoke(ctx context.Context, ar *accessv1.AccessRequest, tgt *accessv1.AccessTarget, phase accessv1.Phase, by, reason string) error {
	if tgt != nil {
		login, group := ar.Spec.Requester, tgt.Spec.Group
		keep, err := r.otherActiveGrant(ctx, ar, group)
		if err != nil {
			return err
		}
		if keep != "" {
			reason += fmt.Sprintf("; %s stays in %s for %s", login, group, keep)
		} else if _, err := r.edit(ctx, "revoke", func(body string) (string, bool, error) {
			b, changed, err := controlplane.RemoveFromGroup([]byte(body), group, login)
			if errors.Is(err, controlplane.ErrGroupMissing) {
				return body, false, nil // nothing to remove it from
			}
			return string(b), changed, err
		}); err != nil {
			return err // retried: a grant must not outlive its end
		}
	}
	event := accessv1.EventRevoked
	if phase == accessv1.PhaseExpired {
		event = accessv1.EventExpired
	}
	ar.Status.Phase = phase
	ar.Status.EndedAt = ptrTime(r.now())
	r.history(ar, event, by, reason)
	setRequestReady(ar, metav1.ConditionFalse, accessv1.ReasonNotGranted, strings.ToLower(event))
	return nil
}

// otherActiveGrant names another request whose grant of the same login in
// group is still running, or returns "".
func (r *AccessRequestReconciler) otherActiveGrant(ctx context.Context, ar *accessv1.AccessRequest, group string) (string, error) {
	var list accessv1.AccessRequestList
	if err := r.List(ctx, &list); err != nil {
		return "", err
	}
	now := r.now()
	for i := range list.Items {
		o := &list.Items[i]
		if o.Name == ar.Name || o.Spec.Requester != ar.Spec.Requester || !grantRunning(o, now) {
			continue
		}
		var t accessv1.AccessTarget
		if err := r.Get(ctx, types.NamespacedName{Name: o.Spec.Target}, &t); err != nil {
			continue
		}
		if t.Spec.Group == group {
			return o.Name, nil
		}
	}
	return "", nil
}

// grantRunning reports whether o's login is (or is being put) in its group
// and stays there at now.
func grantRunning(o *accessv1.AccessRequest, now time.Time) bool {
	if d := o.Spec.Decision; d != nil && d.Action == accessv1.ActionRevoke {
		return false
	}
	switch o.Status.Phase {
	case accessv1.PhaseApproved:
		return true
	case accessv1.PhaseActive:
		return o.Status.ExpiresAt != nil && now.Before(o.Status.ExpiresAt.Time)
	}
	return false
}

// edit runs one compare-and-swap policy edit and counts it.
func (r *AccessRequestReconciler) edit(ctx context.Context, op string, f func(string) (string, bool, error)) (controlplane.EditResult, error) {
	opts := r.EditOptions
	opts.OnConflict = func(int) { accessPolicyConflicts.Inc() }
	res, err := controlplane.EditPolicy(ctx, r.Policy, f, opts)
	switch {
	case err != nil:
		accessPolicyWrites.WithLabelValues(op, "error").Inc()
	case res.Wrote:
		accessPolicyWrites.WithLabelValues(op, "written").Inc()
	default:
		accessPolicyWrites.WithLabelValues(op, "unchanged").Inc()
	}
	if res.Conflicts > 0 {
		log.FromContext(ctx).Info("access: policy write conflicts", "op", op, "conflicts", res.Conflicts, "attempts", res.Attempts)
	}
	return res, err
}

func (r *AccessRequestReconciler) fail(ar *accessv1.AccessRequest, msg string) {
	ar.Status.Phase = accessv1.PhaseFailed
	ar.Status.Message = msg
	r.history(ar, accessv1.EventFailed, accessOperator, msg)
	setRequestReady(ar, metav1.ConditionFalse, accessv1.ReasonInvalidRequest, msg)
}

// history appends one step; the oldest steps after the first go when the
// list is full.
func (r *AccessRequestReconciler) history(ar *accessv1.AccessRequest, event, by, reason string) {
	h := accessv1.HistoryEntry{Time: metav1.NewTime(r.now()), Event: event, By: by, Reason: reason}
	if len(ar.Status.History) >= 64 {
		ar.Status.History = append(ar.Status.History[:1], ar.Status.History[2:]...)
	}
	ar.Status.History = append(ar.Status.History, h)
	if event != accessv1.EventRequested || ar.Status.Message == "" {
		ar.Status.Message = strings.TrimSpace(event + " " + reason)
	}
}

// record reports the steps just written: an Event, a log line and a
// metric each, and a notification.
func (r *AccessRequestReconciler) record(ctx context.Context, log logr.Logger, ar *accessv1.AccessRequest, tgt *accessv1.AccessTarget, before *accessv1.AccessRequestStatus) {
	for _, h := range ar.Status.History[min(len(before.History), len(ar.Status.History)):] {
		typ := corev1.EventTypeNormal
		if h.Event == accessv1.EventFailed || h.Event == accessv1.EventDenied {
			typ = corev1.EventTypeWarning
		}
		msg := fmt.Sprintf("%s: %s for %s", h.Event, ar.Spec.Requester, ar.Spec.Target)
		if h.By != "" {
			msg += " by " + h.By
		}
		if h.Reason != "" {
			msg += ": " + h.Reason
		}
		if r.Recorder != nil {
			r.Recorder.Event(ar, typ, h.Event, msg)
		}
		log.Info("access", "request", ar.Name, "event", h.Event, "phase", ar.Status.Phase, "target", ar.Spec.Target,
			"requester", ar.Spec.Requester, "by", h.By, "reason", h.Reason, "at", h.Time.UTC().Format(time.RFC3339Nano))
		r.Notifier.Send(ctx, tgt, msg)
	}
	if ar.Status.Phase != before.Phase {
		accessTransitions.WithLabelValues(string(ar.Status.Phase)).Inc()
	}
}

func setRequestReady(ar *accessv1.AccessRequest, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&ar.Status.Conditions, metav1.Condition{
		Type: accessv1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: ar.Generation,
	})
}

func ptrTime(t time.Time) *metav1.Time { mt := metav1.NewTime(t); return &mt }

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
