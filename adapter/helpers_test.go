package adapter_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
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

// adapterProc is the command running in a child process.
type adapterProc struct {
	*testkit.Process
}

// startAdapterCmd runs the command with env added to the test's
// offline-clean environment, and waits until it serves on the tailnet.
func startAdapterCmd(t testing.TB, env []string, args ...string) *adapterProc {
	t.Helper()
	cmd := exec.Command(testkit.BuildOnce(t, "tsymbiote.dhouti.dev/adapter/cmd/tsymbiote-adapter"), args...)
	cmd.Env = append(append(os.Environ(), tailscaledtest.Env...), env...)
	p := &adapterProc{testkit.Start(t, cmd)}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, "serving on the tailnet"); err != nil {
		t.Fatal(err)
	}
	return p
}

// stop stops the command (SIGTERM) and wants a clean exit.
func (p *adapterProc) stop(t testing.TB) {
	t.Helper()
	if err := p.Stop(testkit.StopGrace); err != nil {
		t.Errorf("adapter exit: %v", err)
	}
}

func (p *adapterProc) output() string { return p.Output() }

func (p *adapterProc) lastLines(n int) []string {
	lines := strings.Split(strings.TrimRight(p.Output(), "\n"), "\n")
	return lines[max(0, len(lines)-n):]
}
