package testkit_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// sh runs script in a shell as a Process for t.
func sh(t *testing.T, script string) *testkit.Process {
	t.Helper()
	return testkit.Start(t, exec.Command("sh", "-c", script))
}

func TestProcessStop(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		grace   time.Duration
		wantErr string // "" for a clean exit
		wantOut string
	}{
		{
			name:    "exits on SIGTERM",
			script:  `trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done`,
			grace:   10 * time.Second,
			wantOut: "bye",
		},
		{
			name:    "killed after grace with its children",
			script:  `trap '' TERM; echo ready; sleep 60; sleep 60`,
			grace:   200 * time.Millisecond,
			wantErr: "signal: killed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := sh(t, tt.script)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.WaitFor(ctx, "ready"); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err := p.Stop(tt.grace)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Stop took %v", took)
			}
			if got := errString(err); got != tt.wantErr {
				t.Errorf("Stop = %q, want %q", got, tt.wantErr)
			}
			if !strings.Contains(p.Output(), tt.wantOut) {
				t.Errorf("output %q lacks %q", p.Output(), tt.wantOut)
			}
			if again := p.Stop(tt.grace); errString(again) != tt.wantErr {
				t.Errorf("second Stop = %v, want the first's result", again)
			}
		})
	}
}

func TestProcessWaitForExited(t *testing.T) {
	p := sh(t, `echo starting; exit 3`)
	err := p.WaitFor(context.Background(), "ready")
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "starting") {
		t.Fatalf("WaitFor = %v, want the exit status and the output", err)
	}
}

func TestProcessKill(t *testing.T) {
	p := sh(t, `echo ready; sleep 60`)
	if err := p.WaitFor(context.Background(), "ready"); err != nil {
		t.Fatal(err)
	}
	p.Kill()
	select {
	case <-p.Done():
	default:
		t.Fatal("Kill returned before the process exited")
	}
	if got := errString(p.Err()); got != "signal: killed" {
		t.Errorf("Err = %q", got)
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := testkit.FreePorts("127.0.0.1", 5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Errorf("ports %v: not distinct and positive", ports)
		}
		seen[p] = true
	}
	if addr := testkit.FreeAddr(t); !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("FreeAddr = %q", addr)
	}
}

func TestRepo(t *testing.T) {
	if v, err := testkit.PinnedVersion("TAILSCALE_VERSION"); err != nil || !strings.HasPrefix(v, "v") {
		t.Errorf("PinnedVersion(TAILSCALE_VERSION) = %q, %v", v, err)
	}
	if _, err := testkit.PinnedVersion("NO_SUCH_VERSION"); err == nil {
		t.Error("PinnedVersion of an unpinned name: no error")
	}
	_, err := testkit.FindBinary("no-such-binary")
	if err == nil || !strings.Contains(err.Error(), "make tools") {
		t.Errorf("FindBinary(no-such-binary) = %v, want an error saying how to build it", err)
	}
}

func TestBuildOnce(t *testing.T) {
	const pkg = "tsymbiote.dhouti.dev/testkit/internal/hello"
	bin := testkit.BuildOnce(t, pkg)
	if again := testkit.BuildOnce(t, pkg); again != bin {
		t.Errorf("second build at %s, want the first's %s", again, bin)
	}
	if other := testkit.BuildOnce(t, pkg, "-trimpath"); other == bin {
		t.Errorf("build with other flags shares the path %s", bin)
	}
	out, err := exec.Command(bin, "world").Output()
	if err != nil || string(out) != "hello world\n" {
		t.Errorf("built binary said %q, %v", out, err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
