package webui

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/tsnet"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// TestBrowserAccess drives the Access page in Debian's Chromium as two
// tailnet identities (two Headscale users, each a real tsnet node; the
// browser reaches the WebUI through a localhost port that each node
// forwards over the tailnet, so WhoIs names that node's user):
//
//   - the requester asks for prod for two minutes;
//   - a page on another origin (a second localhost port, both as
//     http://localhost:<port>, another site, and http://127.0.0.1:<port>,
//     the same site) POSTs to the approve endpoint through the approver's
//     browser with a form, a no-cors fetch and a fetch carrying the CSRF
//     header: each is refused (the form's answer is the 403) and the
//     request stays Pending, with nothing written to the store;
//   - the approver approves on the page; the grant appears with its
//     countdown (an "operator" goroutine activates approved requests in
//     the in-memory store); the requester revokes it and it moves to the
//     history.
//
// Screenshots go to bin/test-artifacts/TestBrowserAccess.
func TestBrowserAccess(t *testing.T) {
	chromium := needBrowser(t)
	hs := headscaletest.Start(t, headscaletest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	users := map[string]*tsnet.Server{}
	for _, name := range []string{"alice", "bob"} {
		id, err := hs.CreateUser(ctx, name, name+"@example.com")
		if err != nil {
			t.Fatal(err)
		}
		key, err := hs.UserKey(ctx, id, true)
		if err != nil {
			t.Fatal(err)
		}
		users[name], _ = hs.NewNode(t, headscaletest.NodeOptions{Hostname: name + "-laptop", AuthKey: key, Ephemeral: true})
	}
	store := newMemAccessStore(time.Now, AccessTarget{Name: "prod", Label: "Prod SSH", Group: "group:prod", Approvers: []string{"bob@example.com"}, MaxSeconds: 3600, ReasonRequired: true})
	readyc := make(chan Ready, 1)
	startWebUIReady(t, hs, func(c *Config) {
		c.Dev = false
		c.Port = "3621"
		c.Access = true
		c.AccessStore = store
	}, readyc)
	ready := <-readyc
	webuiAddr := net.JoinHostPort(ready.TailscaleIPs[0].String(), "3621")
	requesterURL := forwardOverTailnet(t, users["alice"], webuiAddr)
	approverURL := forwardOverTailnet(t, users["bob"], webuiAddr)
	waitMe(t, ctx, requesterURL, "alice@example.com")
	waitMe(t, ctx, approverURL, "bob@example.com")

	// The attacker's page, on another origin and site.
	evil := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><html><body><h1>Free cats</h1><form id="f" method="POST"><input name="reason" value="pwned"></form></body></html>`)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	evil.Listener = ln
	evil.Start()
	defer evil.Close()
	// The same page as another site (localhost, where the WebUI is
	// 127.0.0.1) and as the same site on another port.
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	evilURLs := "http://localhost:" + port + ",http://127.0.0.1:" + port

	// The operator: grants what was approved.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
				store.activate()
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	out := artifactDir(t)
	cmd := exec.CommandContext(ctx, "node", "e2e/access.mjs")
	cmd.Dir = "frontend"
	// The script asks how many writes the store has had, before and after
	// the cross-site attempts: none may happen between.
	writes := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, store.changes())
	}))
	defer writes.Close()
	cmd.Env = append(os.Environ(), "REQUESTER_URL="+requesterURL, "APPROVER_URL="+approverURL, "EVIL_URLS="+evilURLs,
		"OUT_DIR="+out, "CHROMIUM="+chromium, "WRITES_URL="+writes.URL)
	b, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		t.Log(line)
	}
	if err != nil {
		t.Fatalf("e2e/access.mjs: %v", err)
	}
	for _, png := range []string{"access-pending.png", "access-csrf-localhost.png", "access-csrf-127.0.0.1.png", "access-active.png", "access-revoked.png"} {
		if _, err := os.Stat(filepath.Join(out, png)); err != nil {
			t.Errorf("no screenshot: %v", err)
		}
	}
	reqs, _ := store.Requests(ctx)
	if len(reqs) != 1 || reqs[0].Phase != AccessRevoked || reqs[0].Decision == nil || reqs[0].Decision.By != "bob@example.com" || reqs[0].Requester != "alice@example.com" {
		t.Fatalf("store at the end: %+v", reqs)
	}
	var steps []string
	for _, e := range reqs[0].History {
		steps = append(steps, e.Type+" by "+e.By)
	}
	t.Logf("history: %s", strings.Join(steps, ", "))
}

// forwardOverTailnet listens on a localhost port and forwards every
// connection over the tailnet from node to addr, bytes unchanged (the
// browser's Host and Origin headers reach the WebUI as sent), and returns
// the port's URL. It stops when the test ends.
func forwardOverTailnet(t *testing.T, node *tsnet.Server, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				up, err := node.Dial(ctx, "tcp", addr)
				cancel()
				if err != nil {
					t.Logf("forward to %s: %v", addr, err)
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// waitMe waits until the WebUI, reached through base, names login: the
// WireGuard session is up and WhoIs knows the node.
func waitMe(t *testing.T, ctx context.Context, base, login string) {
	t.Helper()
	var last string
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, base+"/api/me", nil)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			last = string(b)
			if strings.Contains(last, `"login":"`+login+`"`) {
				cancel()
				return
			}
		} else {
			last = err.Error()
		}
		cancel()
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("the WebUI never named %s through %s: %s", login, base, last)
}

// artifactDir is bin/test-artifacts/<TestName> (or $E2E_OUT_DIR), emptied first.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("E2E_OUT_DIR")
	if dir == "" {
		dir = filepath.Join("..", "bin", "test-artifacts", t.Name())
	}
	dir, _ = filepath.Abs(dir)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
