package adapter_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"tsymbiote.dhouti.dev/controlplane/tailscaledtest"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// devClient dials a --dev adapter on localhost.
func devClient(t testing.TB, addr string) adapterv1.AdapterServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adapterv1.NewAdapterServiceClient(conn)
}

func plainGet(t testing.TB, addr, path string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	res, err := hc.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// adapterBinary builds the command once per test process.
func adapterBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "adapter-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "tsymbiote-adapter")
		build := exec.Command("go", "build", "-o", binPath, "./cmd/tsymbiote-adapter")
		build.Env = append(os.Environ(), "GOWORK=off")
		if out, err := build.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("building the command: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// adapterProc is the command running in a child process.
type adapterProc struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	lines   []string
	ready   chan struct{}
	scanned chan struct{}
}

// startAdapterCmd runs the command with env added to the test's
// offline-clean environment, and waits until it serves on the tailnet.
func startAdapterCmd(t testing.TB, env []string, args ...string) *adapterProc {
	t.Helper()
	cmd := exec.Command(adapterBinary(t), args...)
	cmd.Env = append(append(os.Environ(), tailscaledtest.Env...), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &adapterProc{cmd: cmd, ready: make(chan struct{}), scanned: make(chan struct{})}
	t.Cleanup(func() { cmd.Process.Kill(); <-p.scanned; _ = cmd.Wait() })
	go func() {
		defer close(p.scanned)
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			if strings.Contains(sc.Text(), "serving on the tailnet") {
				once.Do(func() { close(p.ready) })
			}
		}
	}()
	select {
	case <-p.ready:
	case <-p.scanned:
		t.Fatalf("adapter exited before serving:\n%s", p.output())
	case <-time.After(90 * time.Second):
		t.Fatalf("adapter not serving within 90s:\n%s", p.output())
	}
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *adapterProc) stop(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.scanned // all output read before Wait closes the pipe
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("adapter exit: %v", err)
	}
}

func (p *adapterProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

func (p *adapterProc) lastLines(n int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines[max(0, len(p.lines)-n):])
}
