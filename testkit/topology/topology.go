// Package topology starts a demo-like tailnet for the WebUI's tests and the demo: real tailscaled daemons logged in to a real Headscale, and real adapter processes attached to them.
package topology

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/proto/contract"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
)

// Options shape a Topology.
type Options struct {
	Nodes int // tailscaled daemons
	// NodeName names daemon i (from 0) and its tailnet host; node-00,
	// node-01, ... when nil.
	NodeName func(i int) string
	// NodeTags are the tags of the daemons' auth keys; untagged nodes
	// owned by headscaletest.User when empty.
	NodeTags []string
	// AdapterPerNode attaches one adapter process to each daemon (the
	// demo's shape); otherwise one adapter serves every daemon as targets.
	AdapterPerNode bool
	// AdapterName names adapter i (from 0) on the tailnet; adapter-00,
	// adapter-01, ... when nil.
	AdapterName func(i int) string
	// AdapterBin is the tsymbiote-adapter binary (testkit.BuildOnce in a
	// test, ./bin in the demo).
	AdapterBin string
	// AdapterEnv is added to every adapter's environment.
	AdapterEnv []string
	// Dir holds every file the topology makes, so that a caller that may
	// be killed (the demo) has one place to sweep; the system's temporary
	// directory when empty.
	Dir  string
	Logf logger.Logf
}

// Topology is a set of daemons and the adapters attached to them. Start
// builds it; Close takes it down.
type Topology struct {
	HS       *headscaletest.Server
	Daemons  []*tailscaledtest.Daemon
	Adapters []*Adapter

	opts Options
	dirs []string // temporary directories to remove
}

// Adapter is one running adapter process.
type Adapter struct {
	Name    string // its host name on the tailnet
	Sockets []string

	proc *testkit.Process
}

// Start brings up opts.Nodes daemons logged in to hs and their adapters,
// and waits until every adapter serves. On error, what it started is
// already stopped; otherwise the caller must call Close.
func Start(ctx context.Context, hs *headscaletest.Server, opts Options) (_ *Topology, err error) {
	tp := &Topology{HS: hs, opts: withDefaults(opts)}
	defer func() {
		if err != nil {
			tp.Close()
		}
	}()
	if err := tp.startDaemons(ctx); err != nil {
		return nil, err
	}
	// Every adapter starts before the first is waited for: each takes
	// seconds to join.
	for i, sockets := range tp.adapterSockets() {
		if _, err := tp.launchAdapter(ctx, tp.opts.AdapterName(i), sockets); err != nil {
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

func withDefaults(opts Options) Options {
	if opts.NodeName == nil {
		opts.NodeName = func(i int) string { return fmt.Sprintf("node-%02d", i) }
	}
	if opts.AdapterName == nil {
		opts.AdapterName = func(i int) string { return fmt.Sprintf("adapter-%02d", i) }
	}
	if opts.Logf == nil {
		opts.Logf = logger.Discard
	}
	return opts
}

// startDaemons starts and logs in the daemons a few at a time: all at once
// starves two cores and makes logins time out.
func (tp *Topology) startDaemons(ctx context.Context) error {
	tp.Daemons = make([]*tailscaledtest.Daemon, tp.opts.Nodes)
	sem := make(chan struct{}, 6)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for i := range tp.opts.Nodes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			d, err := tp.startDaemon(ctx, tp.opts.NodeName(i))
			mu.Lock()
			defer mu.Unlock()
			tp.Daemons[i] = d
			if err != nil && first == nil {
				first = err
			}
		})
	}
	wg.Wait()
	return first
}

// startDaemon starts a tailscaled named name and logs it in. The daemon it
// returns, even with an error, must be closed.
func (tp *Topology) startDaemon(ctx context.Context, name string) (*tailscaledtest.Daemon, error) {
	d, err := tailscaledtest.NewIn(tp.opts.Logf, tp.opts.Dir, name)
	if err != nil {
		return nil, err
	}
	var key string
	if len(tp.opts.NodeTags) == 0 {
		key, err = tp.HS.UserAuthKey(ctx, false)
	} else {
		key, err = tp.HS.AuthKey(ctx, headscaletest.KeyOptions{Tags: tp.opts.NodeTags})
	}
	if err != nil {
		return d, err
	}
	if err := d.Up(ctx, tp.HS.URL, key, name); err != nil {
		return d, err
	}
	tp.opts.Logf("topology: %s up", name)
	return d, nil
}

// adapterSockets groups the daemons' sockets by the adapter that serves
// them.
func (tp *Topology) adapterSockets() [][]string {
	var groups [][]string
	for _, d := range tp.Daemons {
		if tp.opts.AdapterPerNode || len(groups) == 0 {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], d.Socket)
	}
	return groups
}

// StartAdapter starts an adapter named name attached to sockets, joined
// to the tailnet with an ephemeral adapter-tagged key, and waits until it
// serves. Close stops it.
func (tp *Topology) StartAdapter(ctx context.Context, name string, sockets ...string) (*Adapter, error) {
	a, err := tp.launchAdapter(ctx, name, sockets)
	if err != nil {
		return nil, err
	}
	return a, a.waitServing(ctx)
}

// launchAdapter starts an adapter without waiting for it.
func (tp *Topology) launchAdapter(ctx context.Context, name string, sockets []string) (*Adapter, error) {
	key, err := tp.HS.AuthKey(ctx, headscaletest.KeyOptions{Tags: []string{contract.TagAdapter}, Ephemeral: true})
	if err != nil {
		return nil, err
	}
	home, err := tp.homeDir(name)
	if err != nil {
		return nil, err
	}
	args := []string{"--hostname", name, "--port", contract.PortString}
	for _, s := range sockets {
		args = append(args, "--socket", s)
	}
	cmd := exec.Command(tp.opts.AdapterBin, args...)
	cmd.Dir = home
	cmd.Env = append(os.Environ(), tailscaledtest.Env...)
	// HOME and TMPDIR too: an adapter killed with its starter leaves its
	// tsnet state where the starter's sweep finds it.
	cmd.Env = append(cmd.Env, "HOME="+home, "XDG_CONFIG_HOME="+home, "TMPDIR="+home,
		"TS_AUTHKEY="+key, "TS_CONTROL_URL="+tp.HS.URL)
	cmd.Env = append(cmd.Env, tp.opts.AdapterEnv...)
	proc, err := testkit.Launch(cmd)
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", name, err)
	}
	proc.Name = name
	a := &Adapter{Name: name, Sockets: sockets, proc: proc}
	tp.Adapters = append(tp.Adapters, a)
	return a, nil
}

func (a *Adapter) waitServing(ctx context.Context) error {
	return a.proc.WaitFor(ctx, "serving on the tailnet")
}

// homeDir makes the directory an adapter runs in.
func (tp *Topology) homeDir(name string) (string, error) {
	if tp.opts.Dir != "" {
		home := filepath.Join(tp.opts.Dir, name)
		return home, os.MkdirAll(home, 0o700)
	}
	home, err := os.MkdirTemp("", "tsw-a-")
	if err != nil {
		return "", err
	}
	tp.dirs = append(tp.dirs, home)
	return home, nil
}

// Close stops the adapters (SIGTERM, so that they log out and delete
// their nodes), then the daemons, and removes what Start made. Headscale
// is the caller's.
func (tp *Topology) Close() {
	var wg sync.WaitGroup
	for _, a := range tp.Adapters {
		wg.Go(func() { _ = a.proc.Stop(testkit.StopGrace) })
	}
	wg.Wait()
	for _, d := range tp.Daemons {
		if d != nil {
			d.Close()
		}
	}
	for _, d := range tp.dirs {
		os.RemoveAll(d)
	}
}

// Output is the adapter's recent output.
func (a *Adapter) Output() string { return a.proc.Output() }

// Done is closed when the adapter's process has exited.
func (a *Adapter) Done() <-chan struct{} { return a.proc.Done() }

// Freeze stops the adapter's process (SIGSTOP) without killing it: calls
// to it hang, as to an adapter whose host went away, until Stop.
func (a *Adapter) Freeze() { _ = a.proc.Signal(syscall.SIGSTOP) }

// Stop kills the adapter at once, as a crash or a lost host would.
func (a *Adapter) Stop() { a.proc.Kill() }
