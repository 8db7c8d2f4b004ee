package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"
)

// accessFixture is the WebUI with the access API on a memAccessStore and
// three callers known to WhoIs: alice (requester), bob (approver of prod),
// carol (approver of lab, which allows self-approval), and a tagged node.
type accessFixture struct {
	t     *testing.T
	h     http.Handler
	api   *accessAPI
	store *memAccessStore
	now   time.Time
}

var accessCallers = map[string]string{
	"alice": "100.64.0.1:1",
	"bob":   "100.64.0.2:1",
	"carol": "100.64.0.3:1",
	"ci":    "100.64.0.4:1",
	"mal":   "100.64.0.5:1",
}

func newAccessFixture(t *testing.T, allowed ...string) *accessFixture {
	f := &accessFixture{t: t, now: time.Date(2026, 12, 1, 17, 0, 0, 0, time.UTC)}
	who := fakeWhoIs{}
	for name, addr := range accessCallers {
		w := &apitype.WhoIsResponse{Node: &tailcfg.Node{ComputedName: name + "-laptop"}, UserProfile: &tailcfg.UserProfile{LoginName: name + "@example.com"}}
		if name == "ci" {
			w.Node.Tags = []string{"tag:ci"}
			w.UserProfile.LoginName = "tagged-devices"
		}
		who[addr] = w
	}
	f.store = newMemAccessStore(func() time.Time { return f.now },
		AccessTarget{Name: "prod", Label: "Prod SSH", Group: "group:prod", Approvers: []string{"bob@example.com", "carol@example.com"}, MaxSeconds: 3600, ReasonRequired: true},
		AccessTarget{Name: "lab", Group: "group:lab", Approvers: []string{"carol@example.com", "group:sre"}, AllowSelfApproval: true, MaxSeconds: 600},
	)
	s, _ := newTestServer(t, nil, &gate{whois: who, allowed: allowed})
	s.enableAccess(f.store, func() time.Time { return f.now })
	f.api = s.access
	f.h = s.Handler()
	return f
}

// do calls the API as who, the way the WebUI's page does.
func (f *accessFixture) do(who, method, path string, body any) (int, []byte) {
	f.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req := httptest.NewRequest(method, "http://tsymbiote-webui"+path, rd)
	req.RemoteAddr = accessCallers[who]
	if method != http.MethodGet {
		req.Header.Set("Origin", "http://tsymbiote-webui")
		req.Header.Set(CSRFHeader, "1")
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func (f *accessFixture) create(who string, c AccessRequestCreate) AccessRequest {
	f.t.Helper()
	code, b := f.do(who, "POST", "/api/access/requests", c)
	if code != http.StatusCreated {
		f.t.Fatalf("%s creating %+v: %d %s", who, c, code, b)
	}
	var r AccessRequest
	if err := json.Unmarshal(b, &r); err != nil {
		f.t.Fatal(err)
	}
	return r
}

func errorOf(b []byte) string {
	var e struct{ Error string }
	_ = json.Unmarshal(b, &e)
	return e.Error
}

// TestAccessRefusals is every refusal of the access API, each with its
// status and message, and with nothing written to the store.
func TestAccessRefusals(t *testing.T) {
	f := newAccessFixture(t)
	pending := f.create("alice", AccessRequestCreate{Target: "prod", Seconds: 600, Reason: "incident 42"})
	selfLab := f.create("carol", AccessRequestCreate{Target: "lab", Seconds: 60})
	denied := f.create("alice", AccessRequestCreate{Target: "prod", Seconds: 60, Reason: "x"})
	if code, b := f.do("bob", "POST", "/api/access/requests/"+denied.Name+"/deny", AccessAction{Reason: "no"}); code != 200 {
		t.Fatalf("deny: %d %s", code, b)
	}
	before := f.store.changes()

	for _, tc := range []struct {
		name, who, method, path string
		body                    any
		code                    int
		msg                     string
	}{
		{"unknown target", "alice", "POST", "/api/access/requests", AccessRequestCreate{Target: "nope", Seconds: 60}, 404, `unknown target "nope" (targets: lab, prod)`},
		{"no target", "alice", "POST", "/api/access/requests", AccessRequestCreate{Seconds: 60}, 400, "target: required"},
		{"over the maximum", "alice", "POST", "/api/access/requests", AccessRequestCreate{Target: "prod", Seconds: 7200, Reason: "x"}, 400, "duration 2h0m0s is over target prod's maximum of 1h0m0s"},
		{"zero duration", "alice", "POST", "/api/access/requests", AccessRequestCreate{Target: "lab"}, 400, "want a positive number of seconds"},
		{"reason required", "alice", "POST", "/api/access/requests", AccessRequestCreate{Target: "prod", Seconds: 60}, 400, "target prod requires a reason"},
		{"requester in the body", "alice", "POST", "/api/access/requests", map[string]any{"target": "lab", "seconds": 60, "requester": "bob@example.com"}, 400, `unknown field "requester"`},
		{"malformed body", "alice", "POST", "/api/access/requests", "not an object", 400, "bad request body"},
		{"tagged node asks", "ci", "POST", "/api/access/requests", AccessRequestCreate{Target: "lab", Seconds: 60}, 403, "tagged node ci-laptop (tag:ci) has no login"},
		{"self-approval not allowed", "alice", "POST", "/api/access/requests/" + pending.Name + "/approve", nil, 403, "alice@example.com is not an approver of target prod"},
		{"non-approver", "mal", "POST", "/api/access/requests/" + pending.Name + "/approve", nil, 403, "mal@example.com is not an approver of target prod (approvers: bob@example.com, carol@example.com)"},
		{"approver's own request where self-approval is off", "carol", "POST", "/api/access/requests/" + f.create("carol", AccessRequestCreate{Target: "prod", Seconds: 60, Reason: "y"}).Name + "/approve", nil, 403, "self-approval is not allowed for target prod"},
		{"decided already", "bob", "POST", "/api/access/requests/" + denied.Name + "/approve", nil, 409, "is Denied, not Pending"},
		{"unknown request", "bob", "POST", "/api/access/requests/nope/approve", nil, 404, `no access request "nope"`},
		{"unknown action", "bob", "POST", "/api/access/requests/" + pending.Name + "/grant", nil, 404, `no access action "grant"`},
		{"revoke by a stranger", "mal", "POST", "/api/access/requests/" + pending.Name + "/revoke", nil, 403, "mal@example.com may not revoke request"},
		{"revoke what ended", "alice", "POST", "/api/access/requests/" + denied.Name + "/revoke", nil, 409, "there is nothing to revoke"},
		{"unknown view", "alice", "GET", "/api/access/requests?view=everything", nil, 400, `view "everything"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := f.store.changes()
			code, b := f.do(tc.who, tc.method, tc.path, tc.body)
			if code != tc.code || !strings.Contains(errorOf(b), tc.msg) {
				t.Errorf("got %d %s, want %d with %q", code, b, tc.code, tc.msg)
			}
			if f.store.changes() != n {
				t.Errorf("the store changed")
			}
			t.Logf("%d %s", code, errorOf(b))
		})
	}
	_ = before
	// Self-approval where the target allows it.
	if code, b := f.do("carol", "POST", "/api/access/requests/"+selfLab.Name+"/approve", nil); code != 200 {
		t.Errorf("self-approval on lab: %d %s", code, b)
	}
}

// TestAccessLifecycle walks a request from asking to revoke, checking
// what each caller may do and see on the way, and the time left.
func TestAccessLifecycle(t *testing.T) {
	f := newAccessFixture(t)
	r := f.create("alice", AccessRequestCreate{Target: "prod", Seconds: 600, Reason: "incident 42"})
	if r.Requester != "alice@example.com" || r.Phase != AccessPending || !r.Mine || r.CanApprove || !r.CanRevoke {
		t.Fatalf("created: %+v", r)
	}
	views := func(who string) map[string]int {
		out := map[string]int{}
		for _, v := range AccessViews {
			var l []AccessRequest
			code, b := f.do(who, "GET", "/api/access/requests?view="+v, nil)
			if code != 200 || json.Unmarshal(b, &l) != nil {
				t.Fatalf("%s view %s: %d %s", who, v, code, b)
			}
			out[v] = len(l)
		}
		return out
	}
	if v := views("bob"); v["pending"] != 1 || v["mine"] != 0 || v["all"] != 1 {
		t.Errorf("bob's views: %v", v)
	}
	if v := views("alice"); v["pending"] != 0 || v["mine"] != 1 {
		t.Errorf("alice's views: %v", v)
	}
	code, b := f.do("bob", "POST", "/api/access/requests/"+r.Name+"/approve", AccessAction{Reason: "ok"})
	if code != 200 {
		t.Fatalf("approve: %d %s", code, b)
	}
	f.store.activate()
	f.now = f.now.Add(90 * time.Second)
	var o AccessOverview
	code, b = f.do("alice", "GET", "/api/access", nil)
	if code != 200 || json.Unmarshal(b, &o) != nil {
		t.Fatalf("overview: %d %s", code, b)
	}
	if len(o.Requests) != 1 || o.Requests[0].Phase != AccessActive || o.Requests[0].SecondsLeft != 510 || o.Me.Login != "alice@example.com" {
		t.Fatalf("overview: %s", b)
	}
	if len(o.Targets) != 2 || o.Targets[0].Name != "lab" || o.Targets[1].CanApprove {
		t.Errorf("targets as alice: %+v", o.Targets)
	}
	if v := views("alice"); v["active"] != 1 || v["history"] != 0 {
		t.Errorf("alice's views while active: %v", v)
	}
	code, b = f.do("alice", "POST", "/api/access/requests/"+r.Name+"/revoke", AccessAction{Reason: "done"})
	if code != 200 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	if v := views("bob"); v["active"] != 0 || v["history"] != 1 {
		t.Errorf("bob's views after revoke: %v", v)
	}
	var got AccessRequest
	_, b = f.do("bob", "GET", "/api/access/requests/"+r.Name, nil)
	_ = json.Unmarshal(b, &got)
	var types []string
	for _, e := range got.History {
		types = append(types, e.Type+" by "+e.By)
	}
	if want := "Requested by alice@example.com, Approved by bob@example.com, Granted by , Revoked by alice@example.com"; strings.Join(types, ", ") != want {
		t.Errorf("history: %s, want %s", strings.Join(types, ", "), want)
	}
}

// TestAccessGate checks that --allowed-users gates the access API too,
// and that it is off without --access.
func TestAccessGate(t *testing.T) {
	f := newAccessFixture(t, "alice@example.com")
	if code, b := f.do("bob", "GET", "/api/access", nil); code != 403 || !strings.Contains(errorOf(b), "is not in this WebUI's --allowed-users") {
		t.Errorf("bob not allowed: %d %s", code, b)
	}
	if code, b := f.do("bob", "POST", "/api/access/requests", AccessRequestCreate{Target: "lab", Seconds: 60}); code != 403 {
		t.Errorf("bob not allowed, create: %d %s", code, b)
	}
	if code, _ := f.do("alice", "GET", "/api/access", nil); code != 200 {
		t.Errorf("alice: %d", code)
	}

	_, hs := newTestServer(t, nil, nil)
	res, err := http.Get(hs.URL + "/api/access")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("without --access: %d", res.StatusCode)
	}
}

// TestAccessDev refuses to act without a tailnet identity.
func TestAccessDev(t *testing.T) {
	store := newMemAccessStore(time.Now, AccessTarget{Name: "lab", Group: "group:lab", MaxSeconds: 600})
	s, hs := newTestServer(t, nil, nil)
	s.enableAccess(store, nil)
	hs.Config.Handler = s.Handler()
	res, err := post(hs.URL+"/api/access/requests", "application/json", strings.NewReader(`{"target":"lab","seconds":60}`))
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Error string }
	_ = json.NewDecoder(res.Body).Decode(&e)
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || !strings.Contains(e.Error, "no tailnet identity in --dev mode") {
		t.Errorf("dev: %d %s", res.StatusCode, e.Error)
	}
}

// TestAccessApproverGroup: a member of an approver group:x in the tailnet
// policy may decide; without a readable policy only logins count.
func TestAccessApproverGroup(t *testing.T) {
	f := newAccessFixture(t)
	r := f.create("alice", AccessRequestCreate{Target: "lab", Seconds: 60})
	if code, b := f.do("mal", "POST", "/api/access/requests/"+r.Name+"/approve", nil); code != http.StatusForbidden {
		t.Fatalf("no policy: %d %s", code, b)
	}
	f.api.policy = func(context.Context) ([]byte, error) {
		return []byte(`{
  // who is on call
  "groups": {"group:sre": ["mal@example.com"], "group:prod": []},
}`), nil
	}
	var o AccessOverview
	_, b := f.do("mal", "GET", "/api/access", nil)
	if err := json.Unmarshal(b, &o); err != nil || len(o.Requests) != 1 || !o.Requests[0].CanApprove {
		t.Fatalf("mal in group:sre: %s", b)
	}
	if code, b := f.do("mal", "POST", "/api/access/requests/"+r.Name+"/approve", nil); code != http.StatusOK {
		t.Fatalf("mal in group:sre approving: %d %s", code, b)
	}
}
