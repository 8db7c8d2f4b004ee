package webui

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/webui/frontend"
)

// TestBrowser runs frontend/e2e/run.mjs (playwright-core in Debian's
// Chromium) against the WebUI on the demo topology: the page loads, the
// graph shows every demo node, "Ping all" colours every edge and fills the
// matrix, the progress bar reaches 100%, export downloads one JSON row per
// pair, and a screenshot is saved (under $E2E_OUT_DIR, else the test's
// temporary directory).
//
// It needs the frontend built before the Go test binary (npm run build)
// and /usr/bin/chromium (hack/apt.sh chromium).
func TestBrowser(t *testing.T) {
	chromium := needBrowser(t)
	const nodes = 4
	d := startDemo(t, nodes, true, nil)
	g := d.waitGraph(t)
	var expect []string
	for _, n := range g.Nodes {
		expect = append(expect, n.Name)
	}
	out := os.Getenv("E2E_OUT_DIR")
	if out == "" {
		out = t.TempDir()
	}
	out, _ = filepath.Abs(out)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "e2e/run.mjs")
	cmd.Dir = "frontend"
	cmd.Env = append(os.Environ(), "WEBUI_URL="+d.url, "EXPECT_NODES="+strings.Join(expect, ","), "OUT_DIR="+out, "CHROMIUM="+chromium, "HOST_NODE="+d.tp.Daemons[0].Name)
	b, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		t.Log(line)
	}
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "webui.png")); err != nil {
		t.Errorf("no screenshot: %v", err)
	}
}

// TestBrowserScale is the responsiveness check: the same browser run against
// 100 fully meshed fake adapters (9,900 edges; a ping all is 9,900 calls),
// printing load, fan-out and frame-gap figures. The fakes answer in 1 ms,
// so the figures are the WebUI's own cost.
func TestBrowserScale(t *testing.T) {
	needBrowser(t)
	const n = 100
	addrs, _ := fakeMesh(t, n, func(i int, f *fakeAdapter) { f.delay = time.Millisecond })
	_, hs := newTestServer(t, addrs, nil)
	var expect []string
	for i := range n {
		expect = append(expect, fmt.Sprintf("node-%02d", i))
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "e2e/run.mjs")
	cmd.Dir = "frontend"
	cmd.Env = append(os.Environ(), "WEBUI_URL="+hs.URL, "EXPECT_NODES="+strings.Join(expect, ","), "OUT_DIR="+out, "HOST_NODE=node-00", "PROFILE="+os.Getenv("PROFILE"))
	b, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		t.Log(line)
	}
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
}

// needBrowser returns the Chromium the browser tests drive, after checking
// for everything they need: the frontend built into this binary, Chromium
// ($CHROMIUM or Debian's), playwright-core and node. A missing part skips
// t, or fails it under CI=true (testkit.Missing); so does -short.
func needBrowser(t testing.TB) (chromium string) {
	t.Helper()
	testkit.Integration(t)
	if _, ok := frontend.Assets(); !ok {
		testkit.Missing(t, "frontend not built into this binary: run npm ci && npm run build in webui/frontend first")
	}
	chromium = cmp.Or(os.Getenv("CHROMIUM"), "/usr/bin/chromium")
	if _, err := os.Stat(chromium); err != nil {
		testkit.Missing(t, "no Chromium at %s: run hack/apt.sh chromium", chromium)
	}
	if _, err := os.Stat("frontend/node_modules/playwright-core"); err != nil {
		testkit.Missing(t, "playwright-core not installed: run npm ci in webui/frontend")
	}
	if _, err := exec.LookPath("node"); err != nil {
		testkit.Missing(t, "no node: %v", err)
	}
	return chromium
}
