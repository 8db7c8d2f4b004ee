package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/controller"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
)

// Paths of the AccessRequest webhooks.
const (
	AccessMutatePath   = "/mutate-access-v1alpha1-accessrequest"
	AccessValidatePath = "/validate-access-v1alpha1-accessrequest"
)

// +kubebuilder:webhook:path=/mutate-access-v1alpha1-accessrequest,mutating=true,failurePolicy=fail,sideEffects=None,groups=access.tsymbiote.dhouti.dev,resources=accessrequests,verbs=create;update,versions=v1alpha1,name=maccessrequest.access.tsymbiote.dhouti.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-access-v1alpha1-accessrequest,mutating=false,failurePolicy=fail,sideEffects=None,groups=access.tsymbiote.dhouti.dev,resources=accessrequests,verbs=create;update,versions=v1alpha1,name=vaccessrequest.access.tsymbiote.dhouti.dev,admissionReviewVersions=v1

// AccessAdmission guards AccessRequests. The mutating half records the
// Kubernetes caller (userInfo) in annotations a client cannot set, and fills
// spec.decision.by for kubectl callers. The validating half refuses what
// must never be reconciled: forged callers or decision authors, decisions
// by non-approvers, self-approval a target does not allow, durations over
// the maximum, unknown targets and logins, a target whose group is not in
// the policy, a missing required reason, and illegal decision changes.
//
// Only TrustedAsserter (the WebUI's ServiceAccount, which takes logins
// from WhoIs) may name a tailnet login as the decision's author; any other
// caller decides as k8s:user:<name>.
type AccessAdmission struct {
	Reader          client.Reader // AccessTargets
	Decoder         admission.Decoder
	Policy          controlplane.PolicyEditor // logins, groups; nil skips those checks
	TrustedAsserter string                    // e.g. system:serviceaccount:tsymbiote:tsymbiote-webui
	MaxDuration     time.Duration             // the operator's cap; none when zero
}

// Mutator returns the mutating handler.
func (a *AccessAdmission) Mutator() admission.Handler { return admission.HandlerFunc(a.mutate) }

// Validator returns the validating handler.
func (a *AccessAdmission) Validator() admission.Handler { return admission.HandlerFunc(a.validate) }

func (a *AccessAdmission) trusted(u authenticationv1.UserInfo) bool {
	return a.TrustedAsserter != "" && u.Username == a.TrustedAsserter
}

func (a *AccessAdmission) decode(req admission.Request) (obj, old *accessv1.AccessRequest, err error) {
	obj = &accessv1.AccessRequest{}
	if err := a.Decoder.Decode(req, obj); err != nil {
		return nil, nil, fmt.Errorf("malformed AccessRequest: %w", err)
	}
	if req.Operation == admissionv1.Update {
		old = &accessv1.AccessRequest{}
		if err := a.Decoder.DecodeRaw(req.OldObject, old); err != nil {
			return nil, nil, fmt.Errorf("malformed old AccessRequest: %w", err)
		}
	}
	return obj, old, nil
}

func (a *AccessAdmission) mutate(_ context.Context, req admission.Request) admission.Response {
	obj, old, err := a.decode(req)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	caller := accessv1.K8sUser(req.UserInfo.Username)
	if obj.Annotations == nil {
		obj.Annotations = map[string]string{}
	}
	if old == nil {
		obj.Annotations[accessv1.AnnotationCreatedBy] = caller
		delete(obj.Annotations, accessv1.AnnotationDecidedBy)
	} else {
		setOrDelete(obj.Annotations, accessv1.AnnotationCreatedBy, old.Annotations[accessv1.AnnotationCreatedBy])
		setOrDelete(obj.Annotations, accessv1.AnnotationDecidedBy, old.Annotations[accessv1.AnnotationDecidedBy])
	}
	if d := obj.Spec.Decision; d != nil && (old == nil || !equality.Semantic.DeepEqual(d, old.Spec.Decision)) {
		obj.Annotations[accessv1.AnnotationDecidedBy] = caller
		if d.By == "" && !a.trusted(req.UserInfo) {
			d.By = caller
		}
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, raw)
}

func setOrDelete(m map[string]string, k, v string) {
	if v == "" {
		delete(m, k)
	} else {
		m[k] = v
	}
}

func (a *AccessAdmission) validate(ctx context.Context, req admission.Request) admission.Response {
	obj, old, err := a.decode(req)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if err := a.check(ctx, req.UserInfo, obj, old); err != nil {
		return admission.Denied(fmt.Sprintf("AccessRequest %s: %v", obj.Name, err))
	}
	return admission.Allowed("")
}

func (a *AccessAdmission) check(ctx context.Context, u authenticationv1.UserInfo, obj, old *accessv1.AccessRequest) error {
	caller := accessv1.K8sUser(u.Username)
	tgt := &accessv1.AccessTarget{}
	if err := a.Reader.Get(ctx, types.NamespacedName{Name: obj.Spec.Target}, tgt); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading target %q: %w", obj.Spec.Target, err)
		}
		tgt = nil
	}
	if old == nil {
		if obj.Annotations[accessv1.AnnotationCreatedBy] != caller {
			return fmt.Errorf("annotation %s must be %q (set by the webhook)", accessv1.AnnotationCreatedBy, caller)
		}
		if obj.Spec.Decision != nil {
			return fmt.Errorf("spec.decision must be empty when the request is created: approve it afterwards")
		}
		if !accessv1.ValidLogin(obj.Spec.Requester) {
			return fmt.Errorf("spec.requester %q is not a tailnet login (user@domain)", obj.Spec.Requester)
		}
		cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		defer cancel()
		if err := controller.CheckRequest(cctx, a.Policy, obj, tgt, a.MaxDuration); err != nil {
			if controller.IsInvalid(err) {
				return err
			}
			return fmt.Errorf("cannot check the request against the control plane: %w", err)
		}
		return nil
	}

	// Update.
	if obj.Annotations[accessv1.AnnotationCreatedBy] != old.Annotations[accessv1.AnnotationCreatedBy] {
		return fmt.Errorf("annotation %s cannot change", accessv1.AnnotationCreatedBy)
	}
	if obj.Spec.Target != old.Spec.Target || obj.Spec.Requester != old.Spec.Requester ||
		obj.Spec.Duration != old.Spec.Duration || obj.Spec.Reason != old.Spec.Reason {
		return fmt.Errorf("spec.target, requester, duration and reason cannot change; create a new request")
	}
	d, od := obj.Spec.Decision, old.Spec.Decision
	if equality.Semantic.DeepEqual(d, od) {
		if obj.Annotations[accessv1.AnnotationDecidedBy] != old.Annotations[accessv1.AnnotationDecidedBy] {
			return fmt.Errorf("annotation %s cannot change", accessv1.AnnotationDecidedBy)
		}
		return nil // metadata, labels
	}
	switch {
	case d == nil:
		return fmt.Errorf("spec.decision cannot be removed")
	case od == nil:
	case od.Action == accessv1.ActionApprove && d.Action == accessv1.ActionRevoke:
	default:
		return fmt.Errorf("spec.decision %s cannot become %s: only Approve may become Revoke", od.Action, d.Action)
	}
	if obj.Annotations[accessv1.AnnotationDecidedBy] != caller {
		return fmt.Errorf("annotation %s must be %q (set by the webhook)", accessv1.AnnotationDecidedBy, caller)
	}
	if tgt == nil {
		return fmt.Errorf("unknown target %q: no AccessTarget of that name", obj.Spec.Target)
	}
	// Who is deciding.
	actor := caller
	if a.trusted(u) {
		if !accessv1.ValidLogin(d.By) {
			return fmt.Errorf("spec.decision.by %q: the WebUI must assert the approver's tailnet login", d.By)
		}
		actor = d.By
	} else if d.By != caller {
		return fmt.Errorf("spec.decision.by %q: you are %s; only the WebUI may decide as a tailnet login", d.By, caller)
	}
	// The requester may cancel or give up their own grant.
	if d.Action == accessv1.ActionRevoke && actor == obj.Spec.Requester {
		return nil
	}
	ok, err := a.isApprover(ctx, tgt, u, actor)
	if err != nil {
		return fmt.Errorf("checking approvers of %q: %w", tgt.Name, err)
	}
	if !ok {
		return fmt.Errorf("%s is not an approver of target %q (approvers: %s)", actor, tgt.Name, strings.Join(tgt.Spec.Approvers, ", "))
	}
	if d.Action == accessv1.ActionApprove && actor == obj.Spec.Requester && !tgt.Spec.AllowSelfApproval {
		return fmt.Errorf("self-approval is not allowed for target %q: %s requested it", tgt.Name, actor)
	}
	if d.Action == accessv1.ActionApprove {
		if err := controller.CheckDuration(obj, tgt, a.MaxDuration); err != nil {
			return err
		}
	}
	return nil
}

// isApprover reports whether actor (a login the WebUI asserted, or the
// Kubernetes caller u) is one of tgt's approvers.
func (a *AccessAdmission) isApprover(ctx context.Context, tgt *accessv1.AccessTarget, u authenticationv1.UserInfo, actor string) (bool, error) {
	if strings.HasPrefix(actor, accessv1.SubjectK8sUserPrefix) {
		for _, s := range tgt.Spec.Approvers {
			if s == actor {
				return true, nil
			}
			if g, ok := strings.CutPrefix(s, accessv1.SubjectK8sGroupPrefix); ok && slices.Contains(u.Groups, g) {
				return true, nil
			}
		}
		return false, nil
	}
	return controller.MatchesLogin(ctx, a.Policy, tgt.Spec.Approvers, actor)
}
