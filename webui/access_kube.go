package webui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
)

// kubeAccessStore keeps access requests as access.tsymbiote.dhouti.dev
// resources. The WebUI acts with its own ServiceAccount, which the
// operator's admission webhook trusts to assert tailnet logins in
// spec.requester and spec.decision.by. It is safe for concurrent use, as
// the client is.
type kubeAccessStore struct {
	c client.Client
}

// NewKubeAccessStore returns an AccessStore over the cluster cfg points at.
func NewKubeAccessStore(cfg *rest.Config) (AccessStore, error) {
	scheme := runtime.NewScheme()
	if err := accessv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &kubeAccessStore{c: c}, nil
}

// kubeConfig is the in-cluster config (the pod's ServiceAccount), or
// $KUBECONFIG's current context outside a cluster.
func kubeConfig() (*rest.Config, error) {
	cfg, err := rest.InClusterConfig()
	if err == nil {
		return cfg, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	kc, kerr := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if kerr != nil {
		return nil, fmt.Errorf("--access: not in a cluster (%w) and no usable kubeconfig: %w", err, kerr)
	}
	return kc, nil
}

// kubeError carries the API server's refusal (the admission webhook's or
// a CRD validation's message) with its status, so that the caller sees
// why, not a 500.
type kubeError struct{ err error }

func (e kubeError) Error() string { return e.err.Error() }
func (e kubeError) Unwrap() error { return e.err }

func (e kubeError) HTTPStatus() int {
	var s apierrors.APIStatus
	if errors.As(e.err, &s) {
		switch code := int(s.Status().Code); code {
		case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity:
			return code
		}
	}
	return http.StatusBadGateway
}

func kerr(err error) error {
	if err == nil {
		return nil
	}
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %w", ErrAccessNotFound, err)
	}
	return kubeError{err}
}

func (s *kubeAccessStore) Targets(ctx context.Context) ([]AccessTarget, error) {
	var l accessv1.AccessTargetList
	if err := s.c.List(ctx, &l); err != nil {
		return nil, kerr(err)
	}
	out := make([]AccessTarget, 0, len(l.Items))
	for _, t := range l.Items {
		out = append(out, targetView(&t))
	}
	return out, nil
}

func targetView(t *accessv1.AccessTarget) AccessTarget {
	return AccessTarget{
		Name:              t.Name,
		Label:             t.Spec.Label,
		Group:             t.Spec.Group,
		Approvers:         t.Spec.Approvers,
		AllowSelfApproval: t.Spec.AllowSelfApproval,
		MaxSeconds:        int64(t.Spec.MaxDuration.Seconds()),
		ReasonRequired:    t.Spec.RequireReason,
	}
}

func (s *kubeAccessStore) Requests(ctx context.Context) ([]AccessRequest, error) {
	var l accessv1.AccessRequestList
	if err := s.c.List(ctx, &l); err != nil {
		return nil, kerr(err)
	}
	out := make([]AccessRequest, 0, len(l.Items))
	for _, r := range l.Items {
		out = append(out, requestView(&r))
	}
	return out, nil
}

func (s *kubeAccessStore) Request(ctx context.Context, name string) (AccessRequest, error) {
	var r accessv1.AccessRequest
	if err := s.c.Get(ctx, client.ObjectKey{Name: name}, &r); err != nil {
		return AccessRequest{}, kerr(err)
	}
	return requestView(&r), nil
}

func timeOf(m *metav1.Time) time.Time {
	if m == nil {
		return time.Time{}
	}
	return m.Time
}

func requestView(r *accessv1.AccessRequest) AccessRequest {
	v := AccessRequest{
		Name:      r.Name,
		Target:    r.Spec.Target,
		Requester: r.Spec.Requester,
		Seconds:   int64(r.Spec.Duration.Seconds()),
		Reason:    r.Spec.Reason,
		Phase:     AccessPhase(r.Status.Phase),
		Message:   r.Status.Message,
		CreatedAt: r.CreationTimestamp.Time,
		GrantedAt: timeOf(r.Status.GrantedAt),
		ExpiresAt: timeOf(r.Status.ExpiresAt),
		EndedAt:   timeOf(r.Status.EndedAt),
	}
	if v.Phase == "" {
		// The operator has not seen it yet.
		v.Phase = AccessPending
	}
	for _, h := range r.Status.History {
		v.History = append(v.History, AccessEvent{Type: h.Event, At: h.Time.Time, By: h.By, Message: h.Reason})
	}
	if d := r.Spec.Decision; d != nil {
		v.Decision = &AccessDecision{By: d.By, Reason: d.Reason}
		switch d.Action {
		case accessv1.ActionApprove:
			v.Decision.Approved = true
		case accessv1.ActionRevoke:
			// A revoke replaces the approval it ends, if there was one.
			v.Decision.Approved = r.Status.ApprovedAt != nil
		}
		// The decision's time is the operator's record of it.
		event := map[accessv1.Action]string{accessv1.ActionApprove: accessv1.EventApproved, accessv1.ActionDeny: accessv1.EventDenied, accessv1.ActionRevoke: accessv1.EventRevoked}[d.Action]
		for _, h := range r.Status.History {
			if h.Event == event {
				v.Decision.At = h.Time.Time
			}
		}
	}
	return v
}

// nameSafe is what may not appear in a generated name's prefix.
var nameSafe = regexp.MustCompile(`[^a-z0-9-]+`)

func (s *kubeAccessStore) Create(ctx context.Context, requester string, c AccessRequestCreate) (AccessRequest, error) {
	// The name says whose and for what, and the API server makes it unique.
	user, _, _ := strings.Cut(strings.ToLower(requester), "@")
	prefix := strings.Trim(nameSafe.ReplaceAllString(c.Target+"-"+user, "-"), "-")
	if len(prefix) > 40 {
		prefix = strings.TrimRight(prefix[:40], "-")
	}
	r := &accessv1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
		Spec: accessv1.AccessRequestSpec{
			Target:    c.Target,
			Requester: requester,
			Duration:  metav1.Duration{Duration: time.Duration(c.Seconds) * time.Second},
			Reason:    c.Reason,
		},
	}
	if err := s.c.Create(ctx, r); err != nil {
		return AccessRequest{}, kerr(err)
	}
	return requestView(r), nil
}

func (s *kubeAccessStore) Decide(ctx context.Context, name string, d AccessDecision) (AccessRequest, error) {
	action := accessv1.ActionDeny
	if d.Approved {
		action = accessv1.ActionApprove
	}
	return s.setDecision(ctx, name, func(r *accessv1.AccessRequest) error {
		if r.Spec.Decision != nil {
			return accessErrorf(http.StatusConflict, "request %s was already decided (%s by %s)", name, r.Spec.Decision.Action, r.Spec.Decision.By)
		}
		r.Spec.Decision = &accessv1.Decision{Action: action, By: d.By, Reason: d.Reason}
		return nil
	})
}

func (s *kubeAccessStore) Revoke(ctx context.Context, name, by, reason string) (AccessRequest, error) {
	return s.setDecision(ctx, name, func(r *accessv1.AccessRequest) error {
		if d := r.Spec.Decision; d != nil && d.Action != accessv1.ActionApprove {
			return accessErrorf(http.StatusConflict, "request %s was already decided (%s by %s): there is nothing to revoke", name, d.Action, d.By)
		}
		r.Spec.Decision = &accessv1.Decision{Action: accessv1.ActionRevoke, By: by, Reason: reason}
		return nil
	})
}

// setDecision reads the request, lets change set spec.decision, and
// writes it back with the resourceVersion it read: a decision made
// meanwhile by someone else makes the update fail with a conflict, which
// is answered as such instead of being overwritten.
func (s *kubeAccessStore) setDecision(ctx context.Context, name string, change func(*accessv1.AccessRequest) error) (AccessRequest, error) {
	var r accessv1.AccessRequest
	if err := s.c.Get(ctx, client.ObjectKey{Name: name}, &r); err != nil {
		return AccessRequest{}, kerr(err)
	}
	if err := change(&r); err != nil {
		return AccessRequest{}, err
	}
	if err := s.c.Update(ctx, &r); err != nil {
		if apierrors.IsConflict(err) {
			return AccessRequest{}, accessErrorf(http.StatusConflict, "request %s changed meanwhile; reload and try again", name)
		}
		return AccessRequest{}, kerr(err)
	}
	return requestView(&r), nil
}
