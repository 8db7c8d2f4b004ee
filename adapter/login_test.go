package adapter_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/adapter"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
)

// TestInteractiveLogin: without TS_AUTHKEY the adapter logs the control
// server's login URL and waits; stopping it then is clean.
func TestInteractiveLogin(t *testing.T) {
	hs := headscaletest.Start(t, headscaletest.Options{})
	d := tailscaledtest.Start(t, "login")
	var mu sync.Mutex
	var lines []string
	found := make(chan string, 1)
	logf := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		mu.Lock()
		lines = append(lines, line)
		mu.Unlock()
		if i := strings.Index(line, hs.URL+"/register/"); i >= 0 {
			select {
			case found <- line[i:]:
			default:
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- adapter.Run(ctx, logf, adapter.Config{
			AllowedTag: adapter.DefaultAllowedTag, HostnamePrefix: adapter.DefaultHostnamePrefix,
			Port: adapter.DefaultPort, Sockets: []string{d.Socket}, ControlURL: hs.URL,
			StateDir: t.TempDir(), Logout: true,
		})
	}()
	select {
	case u := <-found:
		t.Logf("login URL logged: %s", u)
	case err := <-errc:
		t.Fatalf("Run returned before logging a login URL: %v", err)
	case <-time.After(60 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no login URL within 60s; logs:\n%s", strings.Join(lines, "\n"))
	}
	cancel()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "joining the tailnet") {
			t.Errorf("Run after cancel during login = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestForceLogin runs the command three times on one state directory: the
// second run's new TS_AUTHKEY is ignored (the state holds a login), the
// third's is used because TSNET_FORCE_LOGIN=1.
func TestForceLogin(t *testing.T) {
	hs := headscaletest.Start(t, headscaletest.Options{})
	d := tailscaledtest.Start(t, "force")
	home := t.TempDir()
	run := func(extra ...string) *adapterProc {
		env := append([]string{
			"HOME=" + home, "XDG_CONFIG_HOME=" + home, "HEADSCALE_URL=" + hs.URL,
			"TS_AUTHKEY=" + mintKey(t, hs, false, headscaletest.TagAdapter),
		}, extra...)
		p := startAdapterCmd(t, env, "--socket", d.Socket, "--hostname", "adapter-force", "--logout=false")
		p.stop(t)
		return p
	}
	run()
	ignored := run()
	if out := ignored.output(); !strings.Contains(out, "Ignoring authkey") {
		t.Errorf("second run did not ignore the new key:\n%s", out)
	}
	forced := run("TSNET_FORCE_LOGIN=1")
	if out := forced.output(); strings.Contains(out, "Ignoring authkey") || !strings.Contains(out, "running StartLoginInteractive") {
		t.Errorf("TSNET_FORCE_LOGIN=1 run did not log in again:\n%s", out)
	}
	for _, l := range strings.Split(forced.output(), "\n") {
		if strings.Contains(l, "StartLoginInteractive") {
			t.Logf("forced run: %s", l)
		}
	}
}
