// Package topology starts a real demo-like tailnet for the WebUI's tests and
// benchmarks: real tailscaled daemons (controlplane/tailscaledtest) logged
// in to a real Headscale, and real adapter processes (the tsymbiote-adapter
// command) attached to them and joined with tag:tsymbiote-adapter keys.
// Everything is offline-clean and dies with the test process.
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

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/controlplane/headscaletest"
	"tsymbiote.dhouti.dev/controlplane/tailscaledtest"
)

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
	Daemons  []*tailscaledtest.Daemon
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
	tp := &Topology{HS: hs}
	defer func() {
		if err != nil {
			tp.Close()
		}
	}()

	// Start and log in the daemons a few at a time: all at once starves
	// two cores and makes logins time out.
	tp.Daemons = make([]*tailscaledtest.Daemon, opts.Nodes)
	sem := make(chan struct{}, 6)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for i := range opts.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			d, err := startDaemon(ctx, fmt.Sprintf("node-%02d", i), hs, logf)
			mu.Lock()
			defer mu.Unlock()
			tp.Daemons[i] = d
			if err != nil && first == nil {
				first = err
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
			d.Close()
		}
	}
	for _, d := range tp.dirs {
		os.RemoveAll(d)
	}
}

// startDaemon starts a tailscaled named name and logs it in to hs with a
// tag:test key. The daemon it returns, even with an error, must be closed.
func startDaemon(ctx context.Context, name string, hs *headscaletest.Server, logf func(string, ...any)) (*tailscaledtest.Daemon, error) {
	d, err := tailscaledtest.New(name, logf)
	if err != nil {
		return nil, err
	}
	key, err := mintKey(ctx, hs.Client, false, "tag:test")
	if err != nil {
		return d, err
	}
	if err := d.Up(ctx, hs.URL, key.Reveal(), name); err != nil {
		return d, err
	}
	logf("%s up", name)
	return d, nil
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
	cmd.Env = append(os.Environ(), tailscaledtest.Env...)
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
