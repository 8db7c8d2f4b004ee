package controlplane_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// fakePolicyAPI answers the Tailscale API v2 policy and user endpoints
// with the recorded shapes: GET acl with an ETag, POST acl honouring
// If-Match (412 otherwise), POST acl/validate, GET users.
type fakePolicyAPI struct {
	t *testing.T

	mu       sync.Mutex
	policy   string
	etag     string
	calls    []string
	invalid  string        // a policy containing this fails validation
	beforeOK func() string // when set, runs before a POST acl is checked: a concurrent writer's edit
}

func (f *fakePolicyAPI) handler() http.Handler {
	mux := http.NewServeMux()
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if user, _, ok := r.BasicAuth(); !ok || user != fakeAPIKey {
				writeJSON(w, http.StatusUnauthorized, fixture(f.t, "error_unauthorized.json"))
				return
			}
			f.mu.Lock()
			f.calls = append(f.calls, r.Method+" "+r.URL.Path)
			f.mu.Unlock()
			h(w, r)
		}
	}
	mux.HandleFunc("GET /api/v2/tailnet/-/acl", auth(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Accept"); a != "application/hujson" {
			f.t.Errorf("get acl: Accept %q, want application/hujson", a)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		w.Header().Set("Content-Type", "application/hujson")
		w.Header().Set("ETag", `"`+f.etag+`"`)
		_, _ = io.WriteString(w, f.policy)
	}))
	mux.HandleFunc("POST /api/v2/tailnet/-/acl", auth(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "application/hujson" {
			f.t.Errorf("set acl: Content-Type %q, want application/hujson", ct)
		}
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.beforeOK != nil {
			f.policy = f.beforeOK()
			f.etag = etagOf(f.policy)
			f.beforeOK = nil
		}
		if m := r.Header.Get("If-Match"); m == "" || m != `"`+f.etag+`"` {
			writeJSON(w, http.StatusPreconditionFailed, fixture(f.t, "error_precondition.json"))
			return
		}
		f.policy, f.etag = string(body), etagOf(string(body))
		w.Header().Set("ETag", `"`+f.etag+`"`)
		_, _ = w.Write(body)
	}))
	mux.HandleFunc("POST /api/v2/tailnet/-/acl/validate", auth(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if f.invalid != "" && strings.Contains(string(body), f.invalid) {
			writeJSON(w, http.StatusOK, fixture(f.t, "acl_validate_error.json"))
			return
		}
		writeJSON(w, http.StatusOK, []byte("{}"))
	}))
	mux.HandleFunc("GET /api/v2/tailnet/-/users", auth(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, fixture(f.t, "users.json"))
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.t.Errorf("unexpected request %s %s", r.Method, r.URL)
		writeJSON(w, http.StatusNotFound, fixture(f.t, "error_not_found.json"))
	})
	return mux
}

const jitPolicy = `{
  // Who may reach prod: granted just in time.
  "groups": {
    "group:prod": [], // filled by the operator
  },
  "acls": [
    {"action": "accept", "src": ["group:prod"], "dst": ["tag:prod:*"]},
  ],
  "tagOwners": {"tag:prod": ["group:prod"]},
}
`

// TestTailscalePolicyEdit runs EditPolicy against the recorded Tailscale
// shapes: a GET with its ETag, a POST with If-Match refused with 412
// because another writer changed the policy meanwhile, a re-read and a
// retry that keeps the other writer's change, validation before every
// write, and the users' login names.
func TestTailscalePolicyEdit(t *testing.T) {
	f := &fakePolicyAPI{t: t, policy: jitPolicy, etag: etagOf(jitPolicy), invalid: "mallory@example.com"}
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	c := newClient(t, mapEnv(map[string]string{controlplane.EnvAPIURL: srv.URL, controlplane.EnvAPIKey: fakeAPIKey}))
	pe, err := controlplane.AsPolicyEditor(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)

	logins, err := pe.ListLogins(ctx)
	if err != nil || !slices.Equal(logins, []string{"janedoe@example.com", "johndoe@example.com"}) {
		t.Fatalf("ListLogins = %v, %v", logins, err)
	}

	// Another writer edits an unrelated part between our read and our write.
	f.beforeOK = func() string {
		return strings.Replace(f.policy, `"tagOwners"`, `"hosts": {"db": "100.64.0.9"},`+"\n  \"tagOwners\"", 1)
	}
	add := func(body string) (string, bool, error) {
		b, changed, err := controlplane.AddToGroup([]byte(body), "group:prod", "janedoe@example.com")
		return string(b), changed, err
	}
	res, err := controlplane.EditPolicy(ctx, pe, add, controlplane.EditOptions{})
	if err != nil {
		t.Fatalf("EditPolicy: %v", err)
	}
	t.Logf("EditPolicy: %+v", res)
	if !res.Wrote || res.Conflicts != 1 || res.Attempts != 2 {
		t.Errorf("EditPolicy = %+v, want a write after exactly one conflict", res)
	}
	p, _ := c.GetPolicy(ctx)
	if !strings.Contains(p.Body, `"group:prod": ["janedoe@example.com"], // filled by the operator`) ||
		!strings.Contains(p.Body, `"hosts": {"db": "100.64.0.9"}`) || !strings.Contains(p.Body, "// Who may reach prod") {
		t.Errorf("policy after the edit lost something:\n%s", p.Body)
	}
	want := []string{
		"GET /api/v2/tailnet/-/users",
		"GET /api/v2/tailnet/-/acl", "POST /api/v2/tailnet/-/acl/validate", "POST /api/v2/tailnet/-/acl", // 412
		"GET /api/v2/tailnet/-/acl", "POST /api/v2/tailnet/-/acl/validate", "POST /api/v2/tailnet/-/acl", // ok
		"GET /api/v2/tailnet/-/acl", // SetPolicy's new version
		"GET /api/v2/tailnet/-/acl", // read back: nothing left to do
		"GET /api/v2/tailnet/-/acl",
	}
	f.mu.Lock()
	calls := slices.Clone(f.calls)
	f.mu.Unlock()
	if !slices.Equal(calls, want) {
		t.Errorf("calls:\n%s\nwant\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}

	// A policy the control plane refuses is never written.
	before, _ := c.GetPolicy(ctx)
	_, err = controlplane.EditPolicy(ctx, pe, func(body string) (string, bool, error) {
		b, changed, err := controlplane.AddToGroup([]byte(body), "group:prod", "mallory@example.com")
		return string(b), changed, err
	}, controlplane.EditOptions{})
	if !errors.Is(err, controlplane.ErrPolicyInvalid) || !strings.Contains(err.Error(), "test(s) failed") {
		t.Errorf("EditPolicy with an invalid result = %v, want ErrPolicyInvalid with the API's message", err)
	}
	t.Logf("refused: %v", err)
	if after, _ := c.GetPolicy(ctx); after.Body != before.Body {
		t.Errorf("an invalid edit was written")
	}
	// A missing group is an error naming it.
	_, err = controlplane.EditPolicy(ctx, pe, func(body string) (string, bool, error) {
		b, changed, err := controlplane.AddToGroup([]byte(body), "group:nope", "janedoe@example.com")
		return string(b), changed, err
	}, controlplane.EditOptions{})
	if !errors.Is(err, controlplane.ErrGroupMissing) || !strings.Contains(err.Error(), "group:nope") {
		t.Errorf("EditPolicy on a missing group = %v", err)
	}
}

// TestTailscalePolicyEditGivesUp shows that a writer that loses every
// round stops after the attempt budget with ErrPolicyConflict.
func TestTailscalePolicyEditGivesUp(t *testing.T) {
	f := &fakePolicyAPI{t: t, policy: jitPolicy, etag: etagOf(jitPolicy)}
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	c := newClient(t, mapEnv(map[string]string{controlplane.EnvAPIURL: srv.URL, controlplane.EnvAPIKey: fakeAPIKey}))
	pe, _ := controlplane.AsPolicyEditor(c)
	n := 0
	res, err := controlplane.EditPolicy(ctxT(t), pe, func(body string) (string, bool, error) {
		f.mu.Lock()
		f.beforeOK = func() string { n++; return f.policy + "\n// edit " + strings.Repeat("x", n) + "\n" }
		f.mu.Unlock()
		b, changed, err := controlplane.AddToGroup([]byte(body), "group:prod", "janedoe@example.com")
		return string(b), changed, err
	}, controlplane.EditOptions{Attempts: 3, Sleep: func(context.Context, int) error { return nil }})
	if !errors.Is(err, controlplane.ErrPolicyConflict) || res.Conflicts != 3 || res.Wrote {
		t.Fatalf("EditPolicy = %+v, %v; want 3 conflicts and ErrPolicyConflict", res, err)
	}
	t.Logf("gave up: %v", err)
}

func mapEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestHeadscalePolicyEditor runs the policy editor against a real
// Headscale in database policy mode: logins of users made through the API,
// /api/v1/policy/check refusing a bad policy (a group naming an unknown
// user) without writing it, and a group edit that keeps the comments.
func TestHeadscalePolicyEditor(t *testing.T) {
	hs := headscaletest.Start(t, headscaletest.Options{Policy: jitPolicy})
	ctx := ctxT(t)
	for _, u := range []string{"alice", "bob"} {
		if _, err := hs.CreateUser(ctx, u, u+"@example.com"); err != nil {
			t.Fatal(err)
		}
	}
	c := newClient(t, hs.Getenv)
	pe, err := controlplane.AsPolicyEditor(c)
	if err != nil {
		t.Fatal(err)
	}
	logins, err := pe.ListLogins(ctx)
	if err != nil || !slices.Contains(logins, "alice@example.com") || !slices.Contains(logins, "bob@example.com") {
		t.Fatalf("ListLogins = %v, %v", logins, err)
	}
	t.Logf("logins: %v", logins)

	if err := pe.ValidatePolicy(ctx, jitPolicy); err != nil {
		t.Fatalf("ValidatePolicy(the current policy) = %v", err)
	}
	// Headscale's check accepts a group naming an unknown user (the
	// operator checks logins against ListLogins), but not an ACL naming
	// an undefined group.
	bad := strings.Replace(jitPolicy, `"src": ["group:prod"]`, `"src": ["group:undefined"]`, 1)
	err = pe.ValidatePolicy(ctx, bad)
	if !errors.Is(err, controlplane.ErrPolicyInvalid) {
		t.Fatalf("ValidatePolicy(undefined group) = %v, want ErrPolicyInvalid", err)
	}
	t.Logf("check refused: %v", err)
	if err := pe.ValidatePolicy(ctx, `{"acls": [`); !errors.Is(err, controlplane.ErrPolicyInvalid) {
		t.Errorf("ValidatePolicy(malformed) = %v, want ErrPolicyInvalid", err)
	}

	edit := func(login string, add bool) func(string) (string, bool, error) {
		return func(body string) (string, bool, error) {
			f := controlplane.RemoveFromGroup
			if add {
				f = controlplane.AddToGroup
			}
			b, changed, err := f([]byte(body), "group:prod", login)
			return string(b), changed, err
		}
	}
	for _, l := range []string{"alice@example.com", "bob@example.com"} {
		if res, err := controlplane.EditPolicy(ctx, pe, edit(l, true), controlplane.EditOptions{}); err != nil || !res.Wrote {
			t.Fatalf("adding %s: %+v, %v", l, res, err)
		}
	}
	if res, err := controlplane.EditPolicy(ctx, pe, edit("alice@example.com", false), controlplane.EditOptions{}); err != nil || !res.Wrote {
		t.Fatalf("removing alice: %+v, %v", res, err)
	}
	p, _ := c.GetPolicy(ctx)
	t.Logf("policy now:\n%s", p.Body)
	if !strings.Contains(p.Body, `"group:prod": ["bob@example.com"], // filled by the operator`) || !strings.Contains(p.Body, "// Who may reach prod") {
		t.Errorf("policy lost its comments or the edit")
	}
	// An edit whose result fails the check is never written.
	breakIt := func(body string) (string, bool, error) {
		return strings.Replace(body, `"src": ["group:prod"]`, `"src": ["group:undefined"]`, 1), true, nil
	}
	if _, err := controlplane.EditPolicy(ctx, pe, breakIt, controlplane.EditOptions{}); !errors.Is(err, controlplane.ErrPolicyInvalid) {
		t.Errorf("an invalid edit = %v, want ErrPolicyInvalid", err)
	}
	if after, _ := c.GetPolicy(ctx); after.Body != p.Body {
		t.Errorf("a refused edit was written")
	}
}
