// Package tailscaledtest runs real tailscaled daemons (the pinned build in ./bin) for tests and the demo: userspace networking, their own socket, state directory and WireGuard port, offline-clean.
package tailscaledtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/testkit"
)

// Env is the environment every daemon and CLI call gets: no log upload,
// DERP over plain HTTP (Headscale's embedded DERP), and no UPnP/NAT-PMP/PCP
// probes of the machine's gateway.
var Env = []string{
	"TS_NO_LOGS_NO_SUPPORT=true",
	"TS_DEBUG_USE_DERP_HTTP=1",
	"TS_DISABLE_PORTMAPPER=1",
}

// Daemon is one running tailscaled. Each dies with the process that
// started it (testkit.Process); Close kills it and removes its files.
// Its methods are safe for concurrent use.
type Daemon struct {
	Name     string
	Dir      string // holds the socket and state; short, for the socket path limit
	Socket   string
	StateDir string

	bin, cli string
	logf     logger.Logf

	mu   sync.Mutex
	proc *testkit.Process // nil while stopped
	last string           // the output of the last process, once stopped
}

// Start starts a tailscaled named name for t, and stops it and removes its
// files when t ends. Without the pinned binaries it skips t, or fails it
// under CI=true.
func Start(t testing.TB, name string) *Daemon {
	t.Helper()
	testkit.Binary(t, "tailscaled")
	testkit.Binary(t, "tailscale")
	d, err := New(t.Logf, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tailscaled %s last output:\n%s", name, d.Output())
		}
		d.Close()
	})
	return d
}

// New starts a tailscaled named name outside a test. The caller must call
// Close.
func New(logf logger.Logf, name string) (*Daemon, error) {
	return NewIn(logf, "", name)
}

// NewIn is New with the daemon's directory made in parent (the system's
// temporary directory when empty), so that a caller that may be killed
// before Close (the demo) keeps every file in one place to sweep.
func NewIn(logf logger.Logf, parent, name string) (*Daemon, error) {
	bin, err := testkit.FindBinary("tailscaled")
	if err != nil {
		return nil, err
	}
	cli, err := testkit.FindBinary("tailscale")
	if err != nil {
		return nil, err
	}
	// t.TempDir paths can exceed the 108-byte unix socket limit.
	dir, err := os.MkdirTemp(parent, "tsd-"+name+"-")
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		Name: name, Dir: dir,
		Socket:   filepath.Join(dir, "tailscaled.sock"),
		StateDir: filepath.Join(dir, "state"),
		bin:      bin, cli: cli, logf: logf,
	}
	if err := d.Restart(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Close kills the daemon and removes its files.
func (d *Daemon) Close() {
	d.Stop()
	os.RemoveAll(d.Dir)
}

// Restart starts the daemon again after Stop, with the same state, socket
// and name. It waits until the socket answers.
func (d *Daemon) Restart() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc != nil {
		return fmt.Errorf("tailscaled %s already running", d.Name)
	}
	cmd := exec.Command(d.bin,
		"--tun=userspace-networking",
		"--socket="+d.Socket,
		"--statedir="+d.StateDir,
		"--port=0",
		"--no-logs-no-support",
	)
	cmd.Env = append(os.Environ(), Env...)
	proc, err := testkit.Launch(cmd)
	if err != nil {
		return fmt.Errorf("tailscaled %s: %w", d.Name, err)
	}
	d.proc = proc
	d.logf("tailscaled %s: started (pid %d)", d.Name, proc.PID())
	return d.waitSocket(proc)
}

// waitSocket waits until the LocalAPI answers, for at most 30s.
func (d *Daemon) waitSocket(proc *testkit.Process) error {
	lc := d.Client()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := lc.StatusWithoutPeers(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-proc.Done():
			return fmt.Errorf("tailscaled %s exited during start-up:\n%s", d.Name, proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tailscaled %s socket never answered: %w", d.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the daemon (SIGKILL, like a crash) and waits for it. It is
// safe to call when stopped.
func (d *Daemon) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return
	}
	d.proc.Kill()
	d.last = d.proc.Output()
	d.proc = nil
	// A killed daemon leaves its socket file behind; remove it so that
	// "not running" looks the same as after a clean exit.
	os.Remove(d.Socket)
}

// PID is the running daemon's process ID, or 0.
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return 0
	}
	return d.proc.PID()
}

// Client is a LocalAPI client for the daemon.
func (d *Daemon) Client() *local.Client {
	return &local.Client{Socket: d.Socket, UseSocketOnly: true}
}

// Up logs the daemon in to controlURL with authKey as hostname, without
// touching the host's DNS.
func (d *Daemon) Up(ctx context.Context, controlURL, authKey, hostname string) error {
	_, err := d.CLI(ctx, "up", "--login-server="+controlURL, "--auth-key="+authKey,
		"--hostname="+hostname, "--accept-dns=false", "--timeout=60s")
	return err
}

// CLI runs the tailscale CLI against the daemon. Errors never include the
// arguments, which may hold a key.
func (d *Daemon) CLI(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.cli, append([]string{"--socket=" + d.Socket}, args...)...)
	cmd.Env = append(os.Environ(), Env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A call outlives a test binary that dies by up to --timeout otherwise.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("tailscale %s on %s: %w: %s", args[0], d.Name, err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Output is the daemon's recent output (the last run's, once stopped).
func (d *Daemon) Output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return d.last
	}
	return d.proc.Output()
}
