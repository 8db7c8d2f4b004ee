package adapter_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/adapter"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
)

// TestDiscoverRealTailscaled runs --discover-socket against a real
// tailscaled through its real /proc/<pid>/root, then serves it. The proc
// root holds only that process (other tests' daemons may run on this
// machine), mirrored from /proc.
func TestDiscoverRealTailscaled(t *testing.T) {
	d := tailscaledtest.Start(t, "disc")
	pid := d.PID()
	// Short, for the 108-byte limit on the socket path reached through it.
	proc, err := os.MkdirTemp("", "proc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(proc) })
	dir := filepath.Join(proc, strconv.Itoa(pid))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"comm", "cmdline"} {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join("/proc", strconv.Itoa(pid), "root"), filepath.Join(dir, "root")); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var picked string
	logf := func(f string, a ...any) {
		line := fmt.Sprintf(f, a...)
		if strings.HasPrefix(line, "discover-socket: using ") {
			mu.Lock()
			picked = line
			mu.Unlock()
		}
		t.Log(line)
	}
	readyc := make(chan adapter.Ready, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	errc := make(chan error, 1)
	go func() {
		errc <- adapter.Run(ctx, logf, adapter.Config{
			AllowedTag: adapter.DefaultAllowedTag, HostnamePrefix: adapter.DefaultHostnamePrefix,
			Dev: true, Port: "0", DiscoverSocket: true, ProcRoot: proc,
			OnReady: func(r adapter.Ready) { readyc <- r },
		})
	}()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var r adapter.Ready
	select {
	case r = <-readyc:
	case err := <-errc:
		t.Fatal(err)
	}
	st, err := devClient(t, r.Addr.String()).Status(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "root", d.Socket)
	if st.Target != want {
		t.Errorf("discovered target %q, want %q", st.Target, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(picked, want) {
		t.Errorf("the adapter did not say which socket it picked (%q)", picked)
	}
	t.Logf("discovered %s; daemon %s is %s", st.Target, st.Version, st.BackendState)
}
