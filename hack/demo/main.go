// The demo command starts a whole TSymbiote tailnet on this machine and the
// WebUI in front of it: a local Headscale, real tailscaled nodes (userspace
// networking), an adapter attached to each, when run as root a tailscale-cni
// daemon with network-namespace pods (each with an adapter on its per-pod
// LocalAPI socket), and the WebUI with --dev on http://127.0.0.1:3621.
// Ctrl-C (or SIGTERM) stops everything it started and removes its files; a
// demo killed with SIGKILL is cleaned up after by the next one (stale.go).
// `make demo` builds the binaries and runs it.
//
// Nothing it starts talks to anything but loopback and its own namespaces: no
// log upload, no public DERP (Headscale's embedded one only), no port mapping.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"tsymbiote.dhouti.dev/proto/contract"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
	"tsymbiote.dhouti.dev/testkit/topology"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		log.Fatalf("demo: %v", err)
	}
}

type options struct {
	nodes     int
	listen    string
	bin       string
	readyFile string
	cniPods   int
}

func newCommand() *cobra.Command {
	var opts options
	cmd := &cobra.Command{
		Use:   "tsymbiote-demo",
		Short: "Start a local tailnet (Headscale, tailscaled nodes, adapters, CNI pods) and the WebUI in front of it",
		Args:  cobra.NoArgs,
		// Errors are logged once, by main; a bad flag needs no usage dump.
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := run(ctx, log.Printf, opts); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.nodes, "nodes", 4, "number of tailscaled nodes")
	f.StringVar(&opts.listen, "listen", "127.0.0.1:"+contract.PortString, "where the WebUI listens (host:port)")
	f.StringVar(&opts.bin, "bin", "bin", "directory holding tsymbiote-adapter and tsymbiote-webui")
	f.StringVar(&opts.readyFile, "ready-file", "", "write the WebUI URL to this file once everything is up")
	f.IntVar(&opts.cniPods, "cni-pods", 2, "when root: network-namespace pods given a tailnet identity by the tailscale-cni daemon, each with an adapter (0 turns this off)")
	return cmd
}

func (o *options) validate() error {
	if o.nodes < 1 || o.nodes > 50 {
		return fmt.Errorf("--nodes must be between 1 and 50, got %d", o.nodes)
	}
	if o.cniPods < 0 || o.cniPods > 20 {
		return fmt.Errorf("--cni-pods must be between 0 and 20, got %d", o.cniPods)
	}
	return nil
}

// demo is one running demo: what it started, in the order it stops them
// in reverse.
type demo struct {
	logf       func(string, ...any)
	opts       options
	dir        string // everything the demo writes, swept if it is killed
	adapterBin string
	webuiBin   string

	hs    *headscaletest.Server
	tp    *topology.Topology
	pods  cniPods
	webui *testkit.Process
	url   string
}

// run starts the demo, says where it is, and waits for ctx to end or a
// child to die; then it stops everything it started, whatever happened.
func run(ctx context.Context, logf func(string, ...any), opts options) error {
	d, err := newDemo(logf, opts)
	if err != nil {
		return err
	}
	defer d.stop()
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for _, phase := range []func(context.Context) error{
		d.startHeadscale,
		d.startNodes,
		d.startCNIPods,
		d.startWebUI,
	} {
		if err := phase(startCtx); err != nil {
			return err
		}
	}
	if err := d.announce(); err != nil {
		return err
	}
	return d.wait(ctx)
}

// newDemo checks the binaries, removes what killed demos left, and makes
// the demo's directory, marked with its PID.
func newDemo(logf func(string, ...any), opts options) (*demo, error) {
	d := &demo{logf: logf, opts: opts}
	var err error
	if d.adapterBin, err = builtBinary(opts.bin, "tsymbiote-adapter"); err != nil {
		return nil, err
	}
	if d.webuiBin, err = builtBinary(opts.bin, "tsymbiote-webui"); err != nil {
		return nil, err
	}
	sweepStale(logf, os.TempDir())
	if d.dir, err = os.MkdirTemp("", demoDirPrefix); err != nil {
		return nil, err
	}
	if err := writePIDFile(d.dir); err != nil {
		os.RemoveAll(d.dir)
		return nil, err
	}
	return d, nil
}

func builtBinary(dir, name string) (string, error) {
	p, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not built: run `make demo`, which builds it", p)
	}
	return p, nil
}

func (d *demo) startHeadscale(ctx context.Context) (err error) {
	d.logf("demo: starting Headscale")
	if d.hs, err = headscaletest.StartIn(ctx, filepath.Join(d.dir, "headscale"), headscaletest.Options{}); err != nil {
		return err
	}
	d.logf("demo: Headscale at %s", d.hs.URL)
	return nil
}

// startNodes starts the tailscaled nodes, each with its adapter.
func (d *demo) startNodes(ctx context.Context) (err error) {
	d.tp, err = topology.Start(ctx, d.hs, topology.Options{
		Nodes:          d.opts.nodes,
		NodeName:       func(i int) string { return fmt.Sprintf("demo-node-%d", i+1) },
		AdapterPerNode: true,
		AdapterName:    func(i int) string { return fmt.Sprintf("tsymbiote-adapter-demo-node-%d", i+1) },
		AdapterBin:     d.adapterBin,
		AdapterEnv:     d.hs.Env(),
		Dir:            d.dir,
		Logf:           d.logf,
	})
	if err != nil {
		return err
	}
	d.logf("demo: %d nodes up, each with an adapter", d.opts.nodes)
	return nil
}

// startCNIPods starts the CNI daemon and its pods, each with an adapter on
// its LocalAPI socket, when the demo can (root, no other CNI daemon).
func (d *demo) startCNIPods(ctx context.Context) error {
	ok, why := cniPodsWanted(d.opts.cniPods)
	if !ok {
		if why != nil {
			d.logf("demo: no CNI pods (%v); run `sudo make demo` to see tailscale-cni pods too", why)
		}
		return nil
	}
	env := append(d.hs.Env(), tailscaledtest.Env...)
	if err := startCNIPods(ctx, d.logf, &d.pods, d.opts.bin, filepath.Join(d.dir, "cni"), d.opts.cniPods, env); err != nil {
		return fmt.Errorf("CNI pods: %w", err)
	}
	for _, p := range d.pods.pods {
		if _, err := d.tp.StartAdapter(ctx, "tsymbiote-adapter-"+p.name, p.socket); err != nil {
			return err
		}
		d.logf("demo: pod %s has an adapter on its LocalAPI socket", p.name)
	}
	return nil
}

func (d *demo) startWebUI(ctx context.Context) (err error) {
	host, port, err := splitListen(d.opts.listen)
	if err != nil {
		return err
	}
	env := append(d.hs.Env(), tailscaledtest.Env...)
	d.webui, err = launch("webui", filepath.Join(d.dir, "webui"), env, d.webuiBin,
		"--dev", "--generate-auth", "--hostname", "tsymbiote-webui-demo", "--port", port)
	if err != nil {
		return err
	}
	d.url = "http://" + host + ":" + port
	if err := waitHTTP(ctx, d.url+"/healthz"); err != nil {
		return fmt.Errorf("webui did not come up: %w", err)
	}
	return nil
}

// announce writes the ready file and tells the user where the WebUI is.
func (d *demo) announce() error {
	if d.opts.readyFile != "" {
		if err := os.WriteFile(d.opts.readyFile, []byte(d.url+"\n"), 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("\nTSymbiote demo is up: %s\n(%d nodes and %d CNI pods with adapters, Headscale at %s). Ctrl-C stops it.\n\n",
		d.url, d.opts.nodes, len(d.pods.pods), d.hs.URL)
	return nil
}

// wait returns when ctx ends (nil) or a child exits (an error).
func (d *demo) wait(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	children := []child{{"webui", d.webui.Done(), d.webui.Output}}
	for _, a := range d.tp.Adapters {
		children = append(children, child{a.Name, a.Done(), a.Output})
	}
	if p := d.pods.daemon; p != nil {
		children = append(children, child{p.Name, p.Done(), p.Output})
	}
	select {
	case <-ctx.Done():
		return nil
	case name := <-firstExit(ctx, d.logf, children):
		return fmt.Errorf("%s exited unexpectedly", name)
	}
}

// stop undoes everything in reverse order: the WebUI and the adapters
// first (they log out and delete their nodes), then tailscaled, the CNI
// pods, Headscale, and the demo's files.
func (d *demo) stop() {
	d.logf("demo: stopping")
	if d.webui != nil {
		_ = d.webui.Stop(testkit.StopGrace)
	}
	if d.tp != nil {
		d.tp.Close()
	}
	d.pods.stop()
	if d.hs != nil {
		d.hs.Stop()
	}
	os.RemoveAll(d.dir)
	if d.opts.readyFile != "" {
		os.Remove(d.opts.readyFile)
	}
	d.logf("demo: stopped and cleaned up")
}
