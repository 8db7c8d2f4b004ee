package access

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/webui"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewCommand(func(string) string { return "" })
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestCLIAgainstFake checks what the CLI sends (the CSRF header and an
// Origin naming the server, a JSON body without a requester) and how it
// shows answers and refusals. The real WebUI is in TestCLI.
func TestCLIAgainstFake(t *testing.T) {
	now := time.Now()
	var got []string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path+" origin="+r.Header.Get("Origin")+" csrf="+r.Header.Get(webui.CSRFHeader))
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/api/access/requests":
			var c map[string]any
			_ = json.NewDecoder(r.Body).Decode(&c)
			if c["target"] == "nope" {
				w.WriteHeader(http.StatusNotFound)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": `unknown target "nope" (targets: prod)`})
				return
			}
			if _, ok := c["requester"]; ok || c["seconds"] != 1800.0 || c["target"] != "prod" {
				t.Errorf("body: %v", c)
			}
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(webui.AccessRequest{Name: "prod-alice-x1", Target: "prod", Requester: "alice@example.com", Seconds: 1800, Phase: webui.AccessPending, CreatedAt: now})
		case r.URL.Path == "/api/access":
			_ = json.NewEncoder(w).Encode(webui.AccessOverview{Now: now, Requests: []webui.AccessRequest{
				{Name: "a", Target: "prod", Requester: "alice@example.com", Seconds: 600, Phase: webui.AccessActive, SecondsLeft: 125, Decision: &webui.AccessDecision{Approved: true, By: "bob@example.com"}, CreatedAt: now.Add(-3 * time.Minute), Mine: true},
				{Name: "b", Target: "prod", Requester: "carol@example.com", Seconds: 60, Phase: webui.AccessPending, CanApprove: true, CreatedAt: now.Add(-time.Minute)},
			}})
		case strings.HasSuffix(r.URL.Path, "/approve"):
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "mal@example.com is not an approver of target prod (approvers: bob@example.com)"})
		default:
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": `unknown target "nope" (targets: prod)`})
		}
	}))
	defer hs.Close()

	out, err := run(t, "--server", hs.URL, "request", "prod", "--for", "30m", "--reason", "incident")
	if err != nil || !strings.Contains(out, "prod-alice-x1") || !strings.Contains(out, "Pending") {
		t.Errorf("request: %v\n%s", err, out)
	}
	if want := "POST /api/access/requests origin=" + hs.URL + " csrf=1"; got[0] != want {
		t.Errorf("sent %q, want %q", got[0], want)
	}
	out, err = run(t, "--server", hs.URL, "list", "mine")
	if err != nil || !strings.Contains(out, "2m5s") || !strings.Contains(out, "bob@example.com") || strings.Contains(out, "carol") {
		t.Errorf("list mine: %v\n%s", err, out)
	}
	t.Logf("list mine:\n%s", out)
	out, err = run(t, "--server", hs.URL, "list", "pending", "-o", "json")
	var rs []webui.AccessRequest
	if err != nil || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 || rs[0].Name != "b" {
		t.Errorf("list pending -o json: %v\n%s", err, out)
	}
	_, err = run(t, "--server", hs.URL, "approve", "b")
	if err == nil || err.Error() != "refused (403): mal@example.com is not an approver of target prod (approvers: bob@example.com)" {
		t.Errorf("approve: %v", err)
	}
	_, err = run(t, "--server", hs.URL, "request", "nope")
	if err == nil || !strings.Contains(err.Error(), `not found (404): unknown target "nope"`) {
		t.Errorf("unknown target: %v", err)
	}

	// Nothing listens on a port just closed.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	_, err = run(t, "--server", dead, "list")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the WebUI at "+dead) {
		t.Errorf("unreachable: %v", err)
	}
	t.Logf("unreachable: %v", err)
	for _, tc := range [][]string{
		{"--server", "tsymbiote-webui", "list"},
		{"--server", hs.URL, "list", "-o", "yaml"},
		{"--server", hs.URL, "list", "everything"},
		{"--server", hs.URL, "request", "prod", "--for", "1.5s"},
	} {
		if _, err := run(t, tc...); err == nil {
			t.Errorf("%v: no error", tc)
		} else {
			t.Logf("%v: %v", tc, err)
		}
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 45 * time.Second: "45s", 125 * time.Second: "2m5s", 10 * time.Minute: "10m",
		200 * time.Minute: "3h20m", 2 * time.Hour: "2h", 52 * time.Hour: "2d4h", -time.Second: "0s",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %s, want %s", d, got, want)
		}
	}
}
