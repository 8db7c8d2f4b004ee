package webui

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// TestAllowedUsers serves the WebUI on the tailnet (no --dev) with
// --allowed-users and calls it from real tsnet nodes: a user's node not in
// the list and a node with another tag get 403 from the page and from the
// API, with the reason; a node whose tag is listed gets in.
func TestAllowedUsers(t *testing.T) {
	hs := headscaletest.Start(t, headscaletest.Options{})
	readyc := make(chan Ready, 1)
	_, _, _ = startWebUIReady(t, hs, func(c *Config) {
		c.Dev = false
		c.Port = "3621"
		c.AllowedUsers = []string{"someone@example.com", "tag:test"}
	}, readyc)
	ready := <-readyc
	if len(ready.TailscaleIPs) == 0 {
		t.Fatal("webui has no tailnet address")
	}
	base := "http://" + net.JoinHostPort(ready.TailscaleIPs[0].String(), "3621")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	userKey, err := hs.UserAuthKey(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := hs.NewNode(t, headscaletest.NodeOptions{Hostname: "alice-laptop", AuthKey: userKey, Ephemeral: true})
	pod, _ := hs.NewNode(t, headscaletest.NodeOptions{Hostname: "some-pod", Tags: []string{headscaletest.TagPod}, Ephemeral: true})
	tester, _ := hs.NewNode(t, headscaletest.NodeOptions{Hostname: "tester", Tags: []string{"tag:test"}, Ephemeral: true})

	get := func(c *http.Client, path string) (int, string) {
		t.Helper()
		// The first request waits for the WireGuard session.
		var lastErr error
		for range 20 {
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			req, _ := http.NewRequestWithContext(rctx, http.MethodGet, base+path, nil)
			res, err := c.Do(req)
			if err != nil {
				rcancel()
				lastErr = err
				time.Sleep(500 * time.Millisecond)
				continue
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			rcancel()
			return res.StatusCode, string(b)
		}
		t.Fatalf("GET %s: %v", path, lastErr)
		return 0, ""
	}

	for _, tc := range []struct {
		name string
		c    *http.Client
	}{{"user not listed", user.HTTPClient()}, {"node with another tag", pod.HTTPClient()}} {
		code, body := get(tc.c, "/")
		if code != http.StatusForbidden || !strings.Contains(body, "is not in this WebUI") {
			t.Errorf("%s: page: %d %.300s", tc.name, code, body)
		}
		t.Logf("%s: page %d: %s", tc.name, code, between(body, `<p id="reason">`, "</p>"))
		code, body = get(tc.c, "/api/graph")
		var e struct {
			Error  string `json:"error"`
			Caller Caller `json:"caller"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || code != http.StatusForbidden || !strings.HasPrefix(e.Error, "forbidden: ") {
			t.Errorf("%s: API: %d %.300s", tc.name, code, body)
		}
		t.Logf("%s: API %d: %s", tc.name, code, e.Error)
		if code, _ := get(tc.c, "/metrics"); code != http.StatusForbidden {
			t.Errorf("%s: metrics: %d", tc.name, code)
		}
	}
	code, body := get(tester.HTTPClient(), "/api/me")
	if code != 200 || !strings.Contains(body, `"allowed":true`) {
		t.Errorf("listed tag: /api/me %d %s", code, body)
	}
	if code, _ := get(tester.HTTPClient(), "/api/graph"); code != 200 {
		t.Errorf("listed tag: /api/graph %d", code)
	}
	t.Logf("listed tag: /api/me %d %s", code, strings.TrimSpace(body))
	// Health stays open: it says nothing about the tailnet.
	if code, _ := get(user.HTTPClient(), "/healthz"); code != 200 {
		t.Errorf("healthz for a refused user: %d", code)
	}
}

func between(s, a, b string) string {
	_, s, _ = strings.Cut(s, a)
	s, _, _ = strings.Cut(s, b)
	return s
}
