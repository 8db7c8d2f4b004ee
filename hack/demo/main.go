// The demo command starts a whole TSymbiote tailnet on this machine and the
// WebUI in front of it: a local Headscale, real tailscaled nodes (userspace
// networking), an adapter attached to each, and the WebUI with --dev on
// http://127.0.0.1:3621. Ctrl-C (or SIGTERM) stops everything it started and
// removes its files. `make demo` builds the binaries and runs it.
//
// Nothing it starts talks to anything but loopback: no log upload, no public
// DERP (Headscale's embedded one only), no port-mapping probes.
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
	flag.Parse()
	if flag.NArg() > 0 {
		log.Fatalf("demo: unexpected arguments %q", flag.Args())
	}
	if opts.nodes < 1 || opts.nodes > 50 {
		log.Fatalf("demo: --nodes must be between 1 and 50, got %d", opts.nodes)
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
	dir, err := os.MkdirTemp("", "tsymbiote-demo-")
	if err != nil {
		return err
	}
	var procs procGroup
	// Undo in reverse order whatever happens: the WebUI and adapters first
	// (they log out and delete their nodes), then tailscaled, then Headscale.
	var cleanups []func()
	defer func() {
		logf("demo: stopping")
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
	for i := 1; i <= opts.nodes; i++ {
		name := fmt.Sprintf("demo-node-%d", i)
		d, err := tailscaledtest.New(name, logf)
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
		akey, err := hs.Client.CreateAuthKey(startCtx, controlplane.AuthKeyRequest{
			Tags: []string{headscaletest.TagAdapter}, Ephemeral: true, Preauthorized: true, Expiry: 10 * time.Minute,
		})
		if err != nil {
			return err
		}
		env := append(append([]string{"TS_AUTHKEY=" + akey.Key.Reveal()}, hsEnv...), tailscaledtest.Env...)
		if err := procs.start(ctx, logf, "adapter-"+name, env, filepath.Join(dir, "adapter-"+name), adapterBin,
			"--socket", d.Socket, "--hostname", "tsymbiote-adapter-"+name); err != nil {
			return err
		}
		logf("demo: %s up, adapter attached", name)
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
	fmt.Printf("\nTSymbiote demo is up: %s\n(%d nodes with adapters, Headscale at %s). Ctrl-C stops it.\n\n", url, opts.nodes, hs.URL)

	select {
	case <-ctx.Done():
	case name := <-procs.exited:
		return fmt.Errorf("%s exited unexpectedly", name)
	}
	return nil
}
