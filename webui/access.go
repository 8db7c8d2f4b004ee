package webui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
)

// AccessStore is where access targets and requests live: Kubernetes
// resources (access.tsymbiote.dhouti.dev) in a cluster, a map in tests.
// It is the narrow part of Kubernetes the access API needs, so that the
// API's rules are tested without a cluster.
//
// The store returns requests without the caller-relative fields (Mine,
// CanApprove, CanRevoke, SecondsLeft): the API fills those in. The
// operator and its admission webhook check every rule again, so the API's
// checks are for clear errors, not the last line of defence.
//
// Implementations are safe for concurrent use.
type AccessStore interface {
	Targets(ctx context.Context) ([]AccessTarget, error)
	Requests(ctx context.Context) ([]AccessRequest, error)
	// Request returns ErrAccessNotFound when there is no such request.
	Request(ctx context.Context, name string) (AccessRequest, error)
	// Create makes a request by requester, who is the caller's tailnet login.
	Create(ctx context.Context, requester string, c AccessRequestCreate) (AccessRequest, error)
	// Decide records an approver's decision on a pending request.
	Decide(ctx context.Context, name string, d AccessDecision) (AccessRequest, error)
	// Revoke asks for a grant (or a pending request) to end now.
	Revoke(ctx context.Context, name, by, reason string) (AccessRequest, error)
}

// ErrAccessNotFound is what an AccessStore returns for a request or target
// that does not exist.
var ErrAccessNotFound = errors.New("not found")

// accessError is an error with the HTTP status the API answers it with.
type accessError struct {
	code int
	msg  string
}

func (e *accessError) Error() string { return e.msg }

func accessErrorf(code int, format string, args ...any) error {
	return &accessError{code: code, msg: fmt.Sprintf(format, args...)}
}

// accessAPI serves /api/access. It is safe for concurrent use: it holds
// no state of its own beyond the store.
type accessAPI struct {
	logf  logger.Logf
	store AccessStore
	now   func() time.Time
	// policy reads the tailnet policy (HuJSON), for approver groups; nil
	// without a control plane.
	policy func(context.Context) ([]byte, error)
}

func (a *accessAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/access", a.handleOverview)
	mux.HandleFunc("GET /api/access/targets", a.handleTargets)
	mux.HandleFunc("GET /api/access/requests", a.handleRequests)
	mux.HandleFunc("GET /api/access/requests/{name}", a.handleRequest)
	mux.HandleFunc("POST /api/access/requests", a.handleCreate)
	mux.HandleFunc("POST /api/access/requests/{name}/{action}", a.handleAction)
}

// accessOff answers every access route when the WebUI runs without
// --access.
func accessOff(mux *http.ServeMux) {
	mux.HandleFunc("/api/access", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, errors.New("access requests are off in this WebUI (start it with --access)"))
	})
	mux.HandleFunc("/api/access/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, errors.New("access requests are off in this WebUI (start it with --access)"))
	})
}

func callerOf(r *http.Request) Caller {
	c, _ := r.Context().Value(callerKey{}).(Caller)
	return c
}

// login is the caller's tailnet login, or an error saying why it has none
// to act with.
func login(c Caller) (string, error) {
	switch {
	case c.Dev:
		return "", accessErrorf(http.StatusForbidden, "no tailnet identity in --dev mode: access requests need the WebUI on the tailnet, where WhoIs names the caller")
	case len(c.Tags) > 0:
		return "", accessErrorf(http.StatusForbidden, "tagged node %s (%s) has no login of its own to ask or approve with", c.Node, strings.Join(c.Tags, ","))
	case c.Login == "":
		return "", accessErrorf(http.StatusForbidden, "the caller has no tailnet login")
	}
	return c.Login, nil
}

// isApprover reports whether login is one of t's approvers: listed by
// login, or a member of a listed group:x in the tailnet policy (when the
// WebUI could read it; see targets).
func isApprover(t AccessTarget, login string) bool {
	if login == "" {
		return false
	}
	eq := func(a string) bool { return strings.EqualFold(a, login) }
	return slices.ContainsFunc(t.Approvers, eq) || slices.ContainsFunc(t.groupLogins, eq)
}

// targets lists the store's targets with the members of their group:x
// approvers from the tailnet policy, read once per call and only when a
// target names a group. A policy the WebUI cannot read (no control plane,
// or a Tailscale key without policy_file:read) is logged and leaves only
// the approvers listed by login; the operator's webhook decides anyway.
func (a *accessAPI) targets(ctx context.Context) ([]AccessTarget, error) {
	ts, err := a.store.Targets(ctx)
	if err != nil || a.policy == nil {
		return ts, err
	}
	var policy []byte
	for i := range ts {
		for _, ap := range ts[i].Approvers {
			if !strings.HasPrefix(ap, "group:") {
				continue
			}
			if policy == nil {
				if policy, err = a.policy(ctx); err != nil {
					a.logf("access: reading the tailnet policy for approver groups: %v", err)
					return ts, nil
				}
			}
			members, err := controlplane.GroupMembers(policy, ap)
			if err != nil {
				a.logf("access: target %s: approver %s: %v", ts[i].Name, ap, err)
				continue
			}
			ts[i].groupLogins = append(ts[i].groupLogins, members...)
		}
	}
	return ts, nil
}

// mayDecide says why login may not approve or deny req under t, or nil.
func mayDecide(t AccessTarget, req AccessRequest, login string) error {
	if !isApprover(t, login) {
		return accessErrorf(http.StatusForbidden, "%s is not an approver of target %s (approvers: %s)", login, t.Name, strings.Join(t.Approvers, ", "))
	}
	if strings.EqualFold(req.Requester, login) && !t.AllowSelfApproval {
		return accessErrorf(http.StatusForbidden, "self-approval is not allowed for target %s: another approver must decide", t.Name)
	}
	return nil
}

// open reports whether a request may still be decided or revoked.
func open(p AccessPhase) bool {
	return p == AccessPending || p == AccessApproved || p == AccessActive
}

// annotate fills in what the caller may do with each request, and the
// time left of active grants at now.
func annotate(reqs []AccessRequest, targets []AccessTarget, c Caller, now time.Time) {
	byName := map[string]AccessTarget{}
	for _, t := range targets {
		byName[t.Name] = t
	}
	me, _ := login(c)
	for i := range reqs {
		r := &reqs[i]
		t, known := byName[r.Target]
		r.Mine = me != "" && strings.EqualFold(r.Requester, me)
		// A decision the operator has not acted on yet still reads Pending.
		r.CanApprove = known && r.Phase == AccessPending && r.Decision == nil && me != "" && mayDecide(t, *r, me) == nil
		r.CanRevoke = open(r.Phase) && me != "" && (r.Mine || (known && isApprover(t, me)))
		if r.Phase == AccessActive && !r.ExpiresAt.IsZero() {
			r.SecondsLeft = max(0, int64(r.ExpiresAt.Sub(now).Round(time.Second)/time.Second))
		}
	}
}

func (a *accessAPI) overview(ctx context.Context, c Caller) (AccessOverview, error) {
	targets, err := a.targets(ctx)
	if err != nil {
		return AccessOverview{}, fmt.Errorf("listing access targets: %w", err)
	}
	reqs, err := a.store.Requests(ctx)
	if err != nil {
		return AccessOverview{}, fmt.Errorf("listing access requests: %w", err)
	}
	me, _ := login(c)
	for i := range targets {
		targets[i].CanApprove = isApprover(targets[i], me)
	}
	now := a.now()
	annotate(reqs, targets, c, now)
	// Newest first: what just happened is what the page is for.
	slices.SortStableFunc(reqs, func(x, y AccessRequest) int { return y.CreatedAt.Compare(x.CreatedAt) })
	slices.SortFunc(targets, func(x, y AccessTarget) int { return strings.Compare(x.Name, y.Name) })
	return AccessOverview{Me: c, Now: now, Targets: nonNil(targets), Requests: nonNil(reqs)}, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (a *accessAPI) handleOverview(w http.ResponseWriter, r *http.Request) {
	o, err := a.overview(r.Context(), callerOf(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func (a *accessAPI) handleTargets(w http.ResponseWriter, r *http.Request) {
	o, err := a.overview(r.Context(), callerOf(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, o.Targets)
}

// AccessViews are the ?view= filters of GET /api/access/requests.
var AccessViews = []string{"all", "mine", "pending", "active", "history"}

// InAccessView reports whether r belongs in view (one of AccessViews) for
// the caller it was annotated for.
func InAccessView(view string, r AccessRequest) bool {
	switch view {
	case "mine":
		return r.Mine
	case "pending":
		return r.Phase == AccessPending && r.CanApprove
	case "active":
		return r.Phase == AccessActive || r.Phase == AccessApproved
	case "history":
		return !open(r.Phase)
	}
	return true
}

func (a *accessAPI) handleRequests(w http.ResponseWriter, r *http.Request) {
	view := r.URL.Query().Get("view")
	if view == "" {
		view = "all"
	}
	if !slices.Contains(AccessViews, view) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("view %q: want one of %s", view, strings.Join(AccessViews, ", ")))
		return
	}
	o, err := a.overview(r.Context(), callerOf(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := []AccessRequest{}
	for _, req := range o.Requests {
		if InAccessView(view, req) {
			out = append(out, req)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *accessAPI) handleRequest(w http.ResponseWriter, r *http.Request) {
	req, err := a.annotated(r.Context(), callerOf(r), r.PathValue("name"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

// annotated is one request with the caller's rights filled in.
func (a *accessAPI) annotated(ctx context.Context, c Caller, name string) (AccessRequest, error) {
	req, err := a.store.Request(ctx, name)
	if errors.Is(err, ErrAccessNotFound) {
		return AccessRequest{}, accessErrorf(http.StatusNotFound, "no access request %q", name)
	}
	if err != nil {
		return AccessRequest{}, fmt.Errorf("reading access request %q: %w", name, err)
	}
	targets, err := a.targets(ctx)
	if err != nil {
		return AccessRequest{}, fmt.Errorf("listing access targets: %w", err)
	}
	reqs := []AccessRequest{req}
	annotate(reqs, targets, c, a.now())
	return reqs[0], nil
}

func (a *accessAPI) target(ctx context.Context, name string) (AccessTarget, error) {
	targets, err := a.targets(ctx)
	if err != nil {
		return AccessTarget{}, fmt.Errorf("listing access targets: %w", err)
	}
	var names []string
	for _, t := range targets {
		if t.Name == name {
			return t, nil
		}
		names = append(names, t.Name)
	}
	slices.Sort(names)
	known := strings.Join(names, ", ")
	if known == "" {
		known = "none"
	}
	return AccessTarget{}, accessErrorf(http.StatusNotFound, "unknown target %q (targets: %s)", name, known)
}

// maxAccessBody bounds the JSON bodies of the access API; they are a few fields.
const maxAccessBody = 16 << 10

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAccessBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return accessErrorf(http.StatusBadRequest, "bad request body: %v", err)
	}
	return nil
}

// ValidateAccessCreate checks a request for a grant against its target and
// names the field at fault.
func ValidateAccessCreate(t AccessTarget, c AccessRequestCreate) error {
	switch {
	case c.Seconds <= 0:
		return accessErrorf(http.StatusBadRequest, "duration %ds: want a positive number of seconds", c.Seconds)
	case t.MaxSeconds > 0 && c.Seconds > t.MaxSeconds:
		return accessErrorf(http.StatusBadRequest, "duration %v is over target %s's maximum of %v", time.Duration(c.Seconds)*time.Second, t.Name, time.Duration(t.MaxSeconds)*time.Second)
	case t.ReasonRequired && strings.TrimSpace(c.Reason) == "":
		return accessErrorf(http.StatusBadRequest, "target %s requires a reason", t.Name)
	case len(c.Reason) > 1024:
		return accessErrorf(http.StatusBadRequest, "reason: %d bytes, at most 1024", len(c.Reason))
	}
	return nil
}

func (a *accessAPI) handleCreate(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	err := func() error {
		me, err := login(c)
		if err != nil {
			return err
		}
		var in AccessRequestCreate
		if err := decodeBody(r, &in); err != nil {
			return err
		}
		if in.Target == "" {
			return accessErrorf(http.StatusBadRequest, "target: required")
		}
		t, err := a.target(r.Context(), in.Target)
		if err != nil {
			return err
		}
		if err := ValidateAccessCreate(t, in); err != nil {
			return err
		}
		req, err := a.store.Create(r.Context(), me, in)
		if err != nil {
			return fmt.Errorf("creating the access request: %w", err)
		}
		a.logf("access: %s asked for %s for %ds (request %s)", me, t.Name, in.Seconds, req.Name)
		reqs := []AccessRequest{req}
		annotate(reqs, []AccessTarget{t}, c, a.now())
		writeJSON(w, http.StatusCreated, reqs[0])
		return nil
	}()
	if err != nil {
		a.fail(w, r, err)
	}
}

func (a *accessAPI) handleAction(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	name, action := r.PathValue("name"), r.PathValue("action")
	err := func() error {
		if action != "approve" && action != "deny" && action != "revoke" {
			return accessErrorf(http.StatusNotFound, "no access action %q: want approve, deny or revoke", action)
		}
		me, err := login(c)
		if err != nil {
			return err
		}
		var in AccessAction
		if err := decodeBody(r, &in); err != nil {
			return err
		}
		if len(in.Reason) > 1024 {
			return accessErrorf(http.StatusBadRequest, "reason: %d bytes, at most 1024", len(in.Reason))
		}
		req, err := a.annotated(r.Context(), c, name)
		if err != nil {
			return err
		}
		t, err := a.target(r.Context(), req.Target)
		if err != nil {
			return err
		}
		var out AccessRequest
		switch action {
		case "approve", "deny":
			if req.Phase != AccessPending {
				return accessErrorf(http.StatusConflict, "request %s is %s, not Pending: it can no longer be decided", name, req.Phase)
			}
			if d := req.Decision; d != nil {
				return accessErrorf(http.StatusConflict, "request %s was already decided by %s", name, d.By)
			}
			if err := mayDecide(t, req, me); err != nil {
				return err
			}
			out, err = a.store.Decide(r.Context(), name, AccessDecision{Approved: action == "approve", By: me, At: a.now(), Reason: in.Reason})
		case "revoke":
			if !open(req.Phase) {
				return accessErrorf(http.StatusConflict, "request %s is %s: there is nothing to revoke", name, req.Phase)
			}
			if !req.CanRevoke {
				return accessErrorf(http.StatusForbidden, "%s may not revoke request %s: only its requester (%s) or an approver of target %s may", me, name, req.Requester, t.Name)
			}
			out, err = a.store.Revoke(r.Context(), name, me, in.Reason)
		}
		if errors.Is(err, ErrAccessNotFound) {
			return accessErrorf(http.StatusNotFound, "no access request %q", name)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", action, name, err)
		}
		a.logf("access: %s: %s by %s", name, action, me)
		reqs := []AccessRequest{out}
		annotate(reqs, []AccessTarget{t}, c, a.now())
		writeJSON(w, http.StatusOK, reqs[0])
		return nil
	}()
	if err != nil {
		a.fail(w, r, err)
	}
}

// fail answers err: its own status for an accessError, 422 for a store's
// refusal that says why (the admission webhook's), else 500.
func (a *accessAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *accessError
	if errors.As(err, &ae) {
		writeError(w, ae.code, err)
		return
	}
	var se interface{ HTTPStatus() int }
	if errors.As(err, &se) {
		writeError(w, se.HTTPStatus(), err)
		return
	}
	a.logf("access: %s %s: %v", r.Method, r.URL.Path, err)
	writeError(w, http.StatusInternalServerError, err)
}
