// Package topology starts a real demo-like tailnet for the WebUI's tests and
// benchmarks: real tailscaled daemons from ./bin (userspace networking, each
// with its own socket, state and WireGuard port) logged in to a real
// Headscale, and real adapter processes (the tsymbiote-adapter command)
// attached to them and joined with tag:tsymbiote-adapter keys. Everything
// is offline-clean and dies with the test process.
package topology

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"tailscale.com/client/local"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/controlplane/headscaletest"
)

// Env keeps every daemon offline-clean: no log upload, DERP over plain
// HTTP (Headscale's embedded DERP), no port-mapping probes of the gateway.
var Env = []string{
	"TS_NO_LOGS_NO_SUPPORT=true",
	"TS_DEBUG_USE_DERP_HTTP=1",
	"TS_DISABLE_PORTMAPPER=1",
}

// Daemon is one running tailscaled.
type Daemon struct {
	Name   string
	Dir    string
	Socket string

	cmd  *exec.Cmd
	done chan struct{}
}

// Adapter is one running adapter process.
type Adapter struct {
	Name    string
	Sockets []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  bytes.Buffer
}

// Topology is a set of daemons and the adapters attached to them.
type Topology struct {
	HS       *headscaletest.Server
	Daemons  []*Daemon
	Adapters []*Adapter

	dirs []string
}

// Options shape a Topology.
type Options struct {
	Nodes int // tailscaled daemons, named node-00, node-01, ...
	// AdapterPerNode attaches one adapter process to each daemon (the
	// demo's shape); otherwise one adapter serves every daemon as targets.
	AdapterPerNode bool
	// AdapterBin is the tsymbiote-adapter binary; see AdapterBinary.
	AdapterBin string
	Logf       func(string, ...any)
}

// AdapterBinary returns $TSYMBIOTE_ADAPTER_BIN, or builds the adapter
// command from the repository's adapter module into dir.
func AdapterBinary(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv("TSYMBIOTE_ADAPTER_BIN"); p != "" {
		return p, nil
	}
	root, err := headscaletest.RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "tsymbiote-adapter")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/tsymbiote-adapter")
	cmd.Dir = filepath.Join(root, "adapter")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the adapter (set TSYMBIOTE_ADAPTER_BIN to skip): %w\n%s", err, out)
	}
	return bin, nil
}

func mintKey(ctx context.Context, cp controlplane.Client, ephemeral bool, tags ...string) (controlplane.Secret, error) {
	k, err := cp.CreateAuthKey(ctx, controlplane.AuthKeyRequest{Tags: tags, Ephemeral: ephemeral, Preauthorized: true, Reusable: false, Expiry: 30 * time.Minute})
	if err != nil {
		return "", fmt.Errorf("minting a %v key: %w", tags, err)
	}
	return k.Key, nil
}

// Start brings up opts.Nodes daemons on hs, logged in with tag:test keys,
// and their adapters, and waits until every adapter serves. Call Close.
func Start(ctx context.Context, hs *headscaletest.Server, opts Options) (_ *Topology, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	tailscaled, err := headscaletest.RepoBinary("tailscaled", "TAILSCALE_VERSION")
	if err != nil {
		return nil, err
	}
	cli, err := headscaletest.RepoBinary("tailscale", "TAILSCALE_VERSION")
	if err != nil {
		return nil, err
	}
	tp := &Topology{HS: hs}
	defer func() {
		if err != nil {
			tp.Close()
		}
	}()

	// Start and log in the daemons a few at a time: all at once starves
	// two cores and makes logins time out.
	tp.Daemons = make([]*Daemon, opts.Nodes)
	sem := make(chan struct{}, 6)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for i := range opts.Nodes {
		dir, err := os.MkdirTemp("", fmt.Sprintf("tsw-%02d-", i))
		if err != nil {
			return nil, err
		}
		tp.dirs = append(tp.dirs, dir)
		d := &Daemon{Name: fmt.Sprintf("node-%02d", i), Dir: dir, Socket: filepath.Join(dir, "tailscaled.sock")}
		tp.Daemons[i] = d
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := d.start(ctx, tailscaled, cli, hs, logf); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}

	bin := opts.AdapterBin
	if bin == "" {
		if bin, err = AdapterBinary(ctx, tp.tempDir("tsw-bin-")); err != nil {
			return nil, err
		}
	}
	var groups [][]string
	if opts.AdapterPerNode {
		for _, d := range tp.Daemons {
			groups = append(groups, []string{d.Socket})
		}
	} else {
		var all []string
		for _, d := range tp.Daemons {
			all = append(all, d.Socket)
		}
		groups = [][]string{all}
	}
	for i, socks := range groups {
		a := &Adapter{Name: fmt.Sprintf("adapter-%02d", i), Sockets: socks}
		tp.Adapters = append(tp.Adapters, a)
		if err := a.start(ctx, bin, hs, tp.tempDir("tsw-a-")); err != nil {
			return nil, err
		}
	}
	for _, a := range tp.Adapters {
		if err := a.waitServing(ctx); err != nil {
			return nil, err
		}
	}
	return tp, nil
}

func (tp *Topology) tempDir(prefix string) string {
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		panic(err)
	}
	tp.dirs = append(tp.dirs, d)
	return d
}

// Close stops everything and removes what Start made.
func (tp *Topology) Close() {
	for _, a := range tp.Adapters {
		a.Stop()
	}
	for _, d := range tp.Daemons {
		if d != nil {
			d.stop()
		}
	}
	for _, d := range tp.dirs {
		os.RemoveAll(d)
	}
}

func (d *Daemon) start(ctx context.Context, bin, cli string, hs *headscaletest.Server, logf func(string, ...any)) error {
	cmd := exec.Command(bin, "--tun=userspace-networking", "--socket="+d.Socket,
		"--statedir="+filepath.Join(d.Dir, "state"), "--port=0", "--no-logs-no-support")
	cmd.Env = append(os.Environ(), Env...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting tailscaled %s: %w", d.Name, err)
	}
	d.cmd, d.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(d.done) }()
	lc := &local.Client{Socket: d.Socket, UseSocketOnly: true}
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := lc.StatusWithoutPeers(cctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-d.done:
			return fmt.Errorf("tailscaled %s exited during start-up", d.Name)
		case <-ctx.Done():
			return fmt.Errorf("tailscaled %s socket never answered: %w", d.Name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	key, err := mintKey(ctx, hs.Client, false, "tag:test")
	if err != nil {
		return err
	}
	up := exec.CommandContext(ctx, cli, "--socket="+d.Socket, "up", "--login-server="+hs.URL, "--auth-key="+key.Reveal(),
		"--hostname="+d.Name, "--accept-dns=false", "--timeout=120s")
	up.Env = append(os.Environ(), Env...)
	var out bytes.Buffer
	up.Stdout, up.Stderr = &out, &out
	if err := up.Run(); err != nil {
		// The arguments hold a key: never print them.
		return fmt.Errorf("tailscale up on %s: %w: %s", d.Name, err, strings.TrimSpace(out.String()))
	}
	logf("%s up", d.Name)
	return nil
}

func (d *Daemon) stop() {
	if d.cmd == nil {
		return
	}
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
	d.cmd = nil
}

// LocalClient is a LocalAPI client for the daemon.
func (d *Daemon) LocalClient() *local.Client {
	return &local.Client{Socket: d.Socket, UseSocketOnly: true}
}

func (a *Adapter) start(ctx context.Context, bin string, hs *headscaletest.Server, home string) error {
	key, err := mintKey(ctx, hs.Client, true, headscaletest.TagAdapter)
	if err != nil {
		return err
	}
	args := []string{"--hostname", a.Name, "-p", "3621"}
	for _, s := range a.Sockets {
		args = append(args, "--socket", s)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), Env...)
	cmd.Env = append(cmd.Env, "HOME="+home, "XDG_CONFIG_HOME="+home, "TS_AUTHKEY="+key.Reveal(), "TS_CONTROL_URL="+hs.URL)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", a.Name, err)
	}
	a.cmd, a.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); pw.Close(); close(a.done) }()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			a.mu.Lock()
			if a.out.Len() < 64<<10 {
				a.out.WriteString(sc.Text() + "\n")
			}
			a.mu.Unlock()
		}
	}()
	return nil
}

func (a *Adapter) waitServing(ctx context.Context) error {
	for {
		a.mu.Lock()
		ok := strings.Contains(a.out.String(), "serving on the tailnet")
		a.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-a.done:
			return fmt.Errorf("%s exited during start-up:\n%s", a.Name, a.Output())
		case <-ctx.Done():
			return fmt.Errorf("%s not serving: %w\n%s", a.Name, ctx.Err(), a.Output())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Output is the adapter's output so far.
func (a *Adapter) Output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.String()
}

// Freeze stops the adapter's process (SIGSTOP) without killing it: calls
// to it hang, as to an adapter whose host went away, until Stop.
func (a *Adapter) Freeze() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGSTOP)
}

// Stop kills the adapter at once, as a crash or a lost host would.
func (a *Adapter) Stop() {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Kill()
	<-a.done
}
