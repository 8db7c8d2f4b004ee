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
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/controlplane/headscaletest"
	"tsymbiote.dhouti.dev/controlplane/tailscaledtest"
)

func main() {
	var opts options
	flag.IntVar(&opts.nodes, "nodes", 4, "number of tailscaled nodes")
	flag.StringVar(&opts.listen, "listen", "127.0.0.1:3621", "where the WebUI listens (host:port)")
	flag.StringVar(&opts.bin, "bin", "bin", "directory holding tsymbiote-adapter and tsymbiote-webui")
	flag.StringVar(&opts.readyFile, "ready-file", "", "write the WebUI URL to this file once everything is up")
	flag.IntVar(&opts.cniPods, "cni-pods", 2, "when root: network-namespace pods given a tailnet identity by the tailscale-cni daemon, each with an adapter (0 turns this off)")
	flag.Parse()
	if flag.NArg() > 0 {
		log.Fatalf("demo: unexpected arguments %q", flag.Args())
	}
	if opts.nodes < 1 || opts.nodes > 50 {
		log.Fatalf("demo: --nodes must be between 1 and 50, got %d", opts.nodes)
	}
	if opts.cniPods < 0 || opts.cniPods > 20 {
		log.Fatalf("demo: --cni-pods must be between 0 and 20, got %d", opts.cniPods)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log.Printf, opts); err != nil && !errors.Is(err, context.Canceled) {
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

func run(ctx context.Context, logf func(string, ...any), opts options) (err error) {
	adapterBin, err := filepath.Abs(filepath.Join(opts.bin, "tsymbiote-adapter"))
	if err != nil {
		return err
	}
	webuiBin, _ := filepath.Abs(filepath.Join(opts.bin, "tsymbiote-webui"))
	for _, b := range []string{adapterBin, webuiBin} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%s not built: run `make demo`, which builds it", b)
		}
	}
	sweepStale(logf, os.TempDir())
	dir, err := os.MkdirTemp("", demoDirPrefix)
	if err != nil {
		return err
	}
	if err := writePIDFile(dir); err != nil {
		os.RemoveAll(dir)
		return err
	}
	var procs procGroup
	// Children that exit while the demo stops are not news.
	ctx, stopping := context.WithCancel(ctx)
	// Undo in reverse order whatever happens: the WebUI and adapters first
	// (they log out and delete their nodes), then tailscaled, then Headscale.
	var cleanups []func()
	defer func() {
		logf("demo: stopping")
		stopping()
		procs.stop(logf)
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		os.RemoveAll(dir)
		if opts.readyFile != "" {
			os.Remove(opts.readyFile)
		}
		logf("demo: stopped and cleaned up")
	}()

	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	logf("demo: starting Headscale")
	hs, err := headscaletest.StartIn(startCtx, filepath.Join(dir, "headscale"), headscaletest.Options{})
	if err != nil {
		return err
	}
	cleanups = append(cleanups, hs.Stop)
	logf("demo: Headscale at %s", hs.URL)

	hsEnv := []string{
		controlplane.EnvHeadscaleURL + "=" + hs.URL,
		controlplane.EnvHeadscaleAPIKey + "=" + hs.APIKey.Reveal(),
	}
	startAdapter := func(name, socket string) error {
		akey, err := hs.Client.CreateAuthKey(startCtx, controlplane.AuthKeyRequest{
			Tags: []string{headscaletest.TagAdapter}, Ephemeral: true, Preauthorized: true, Expiry: 10 * time.Minute,
		})
		if err != nil {
			return err
		}
		env := append(append([]string{"TS_AUTHKEY=" + akey.Key.Reveal()}, hsEnv...), tailscaledtest.Env...)
		return procs.start(ctx, logf, "adapter-"+name, env, filepath.Join(dir, "adapter-"+name), adapterBin,
			"--socket", socket, "--hostname", "tsymbiote-adapter-"+name)
	}
	for i := 1; i <= opts.nodes; i++ {
		name := fmt.Sprintf("demo-node-%d", i)
		d, err := tailscaledtest.NewIn(dir, name, logf)
		if err != nil {
			return err
		}
		cleanups = append(cleanups, d.Close)
		key, err := hs.UserAuthKey(startCtx, false)
		if err != nil {
			return err
		}
		if err := d.Up(startCtx, hs.URL, key.Reveal(), name); err != nil {
			return err
		}
		if err := startAdapter(name, d.Socket); err != nil {
			return err
		}
		logf("demo: %s up, adapter attached", name)
	}

	var pods cniPods
	var podsExited <-chan string // nil, never ready, without pods
	if ok, why := cniPodsWanted(opts.cniPods); ok {
		cleanups = append(cleanups, pods.stop)
		if err := startCNIPods(startCtx, logf, &pods, opts.bin, filepath.Join(dir, "cni"), opts.cniPods, append(append([]string{}, hsEnv...), tailscaledtest.Env...)); err != nil {
			return fmt.Errorf("CNI pods: %w", err)
		}
		podsExited = pods.daemon.exited
		for _, p := range pods.pods {
			if err := startAdapter(p.name, p.socket); err != nil {
				return err
			}
			logf("demo: pod %s has an adapter on its LocalAPI socket", p.name)
		}
	} else if why != nil {
		logf("demo: no CNI pods (%v); run `sudo make demo` to see tailscale-cni pods too", why)
	}

	host, port, err := splitListen(opts.listen)
	if err != nil {
		return err
	}
	env := append(append([]string{}, hsEnv...), tailscaledtest.Env...)
	if err := procs.start(ctx, logf, "webui", env, filepath.Join(dir, "webui"), webuiBin,
		"--dev", "--generate-auth", "--hostname", "tsymbiote-webui-demo", "--port", port); err != nil {
		return err
	}
	url := "http://" + host + ":" + port
	if err := waitHTTP(startCtx, url+"/healthz"); err != nil {
		return fmt.Errorf("webui did not come up: %w", err)
	}
	if opts.readyFile != "" {
		if err := os.WriteFile(opts.readyFile, []byte(url+"\n"), 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("\nTSymbiote demo is up: %s\n(%d nodes and %d CNI pods with adapters, Headscale at %s). Ctrl-C stops it.\n\n", url, opts.nodes, len(pods.pods), hs.URL)

	select {
	case <-ctx.Done():
	case name := <-procs.exited:
		return fmt.Errorf("%s exited unexpectedly", name)
	case name := <-podsExited:
		return fmt.Errorf("%s exited unexpectedly", name)
	}
	return nil
}
