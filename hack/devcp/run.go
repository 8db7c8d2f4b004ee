package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/proto/contract"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
)

// socketPlaceholder in the command stands for the tailscaled socket.
const socketPlaceholder = "{socket}"

// stopGrace is how long the command gets to log out and exit after
// SIGTERM before it is killed.
const stopGrace = 15 * time.Second

func run(ctx context.Context, logf func(string, ...any), opts options) error {
	if name := controlPlaneInEnv(os.Getenv); name != "" {
		if len(opts.command) == 0 {
			return fmt.Errorf("%s is set: the environment names a control plane already, nothing to start", name)
		}
		logf("devcp: %s is set: running the command against that control plane", name)
		return runCommand(ctx, logf, withSocket(opts.command, contract.DefaultSocket), nil)
	}

	dir, err := os.MkdirTemp("", "tsymbiote-devcp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	cp, release, err := localControlPlane(ctx, logf, opts.state, filepath.Join(dir, "headscale"))
	if err != nil {
		return err
	}
	defer release()
	env := append(cp.env(), tailscaledtest.Env...)

	socket := contract.DefaultSocket
	if opts.tailscaled != "" {
		d, err := startTailscaled(ctx, cp, dir, opts.tailscaled)
		if err != nil {
			return err
		}
		defer leave(d)
		socket = d.Socket
		env = append(env, "TAILSCALED_SOCKET="+socket)
	}
	if opts.keyTag != "" {
		key, err := cp.mintKey(ctx, opts.keyTag)
		if err != nil {
			return err
		}
		env = append(env, "TS_AUTHKEY="+key)
	}

	if len(opts.command) == 0 {
		printEnv(env)
		<-ctx.Done()
		return nil
	}
	// The command's tsnet state (os.UserConfigDir, or TMPDIR for the
	// WebUI) goes with the rest, even when the command is killed.
	env = append(env, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "TMPDIR="+dir)
	return runCommand(ctx, logf, withSocket(opts.command, socket), env)
}

// controlPlaneInEnv names a control-plane variable set in the environment,
// or returns "".
func controlPlaneInEnv(getenv func(string) string) string {
	for _, k := range []string{controlplane.EnvOAuthClientID, controlplane.EnvAPIKey, controlplane.EnvHeadscaleURL, controlplane.EnvControlURL} {
		if strings.TrimSpace(getenv(k)) != "" {
			return k
		}
	}
	return ""
}

// local is a Headscale on loopback, this devcp's or a running one's.
type local struct {
	url, apiKey string
}

func (c local) env() []string {
	return []string{
		controlplane.EnvHeadscaleURL + "=" + c.url,
		controlplane.EnvHeadscaleAPIKey + "=" + c.apiKey,
		controlplane.EnvControlURL + "=" + c.url,
	}
}

// mintKey mints a preauthorized ephemeral key with tag through the
// project's control-plane client.
func (c local) mintKey(ctx context.Context, tag string) (string, error) {
	client, err := controlplane.New(func(string, ...any) {}, controlplane.Config{HeadscaleURL: c.url, HeadscaleAPIKey: controlplane.Secret(c.apiKey)})
	if err != nil {
		return "", err
	}
	k, err := client.CreateAuthKey(ctx, controlplane.AuthKeyRequest{
		Tags: []string{tag}, Ephemeral: true, Preauthorized: true, Expiry: time.Hour,
	})
	if err != nil {
		return "", fmt.Errorf("minting a %s key: %w", tag, err)
	}
	return k.Key.Reveal(), nil
}

// localControlPlane reuses the Headscale another devcp published in state,
// when it answers, or starts one in dir and publishes it until release.
func localControlPlane(ctx context.Context, logf func(string, ...any), state, dir string) (_ local, release func(), _ error) {
	published := filepath.Join(state, "env")
	if c, ok := readPublished(ctx, published); ok {
		logf("devcp: using the local Headscale at %s (another devcp started it; it stops with that one)", c.url)
		return c, func() {}, nil
	}
	logf("devcp: starting a local Headscale")
	hs, err := headscaletest.StartIn(ctx, dir, headscaletest.Options{})
	if err != nil {
		return local{}, nil, fmt.Errorf("starting headscale: %w", err)
	}
	c := local{url: hs.URL, apiKey: hs.APIKey}
	logf("devcp: Headscale at %s", c.url)
	data := strings.Join(c.env(), "\n") + "\n"
	if err := os.MkdirAll(state, 0o700); err != nil {
		hs.Stop()
		return local{}, nil, err
	}
	if err := os.WriteFile(published, []byte(data), 0o600); err != nil {
		hs.Stop()
		return local{}, nil, err
	}
	return c, func() {
		// Another devcp may have published its own since.
		if b, err := os.ReadFile(published); err == nil && string(b) == data {
			os.Remove(published)
		}
		hs.Stop()
	}, nil
}

// readPublished reads a published control plane and checks that it is up.
func readPublished(ctx context.Context, path string) (local, bool) {
	f, err := os.Open(path)
	if err != nil {
		return local{}, false
	}
	defer f.Close()
	var c local
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case controlplane.EnvHeadscaleURL:
			c.url = v
		case controlplane.EnvHeadscaleAPIKey:
			c.apiKey = v
		}
	}
	if c.url == "" || c.apiKey == "" {
		return local{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/health", nil)
	if err != nil {
		return local{}, false
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return local{}, false
	}
	res.Body.Close()
	return c, res.StatusCode == http.StatusOK
}

// startTailscaled starts a userspace tailscaled in dir and logs it in to c
// as an ephemeral tag:test node, for an adapter to attach to.
func startTailscaled(ctx context.Context, c local, dir, hostname string) (*tailscaledtest.Daemon, error) {
	d, err := tailscaledtest.NewIn(func(string, ...any) {}, dir, hostname)
	if err != nil {
		return nil, fmt.Errorf("starting tailscaled: %w", err)
	}
	key, err := c.mintKey(ctx, "tag:test")
	if err == nil {
		err = d.Up(ctx, c.url, key, hostname)
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("tailscaled %s: %w", hostname, err)
	}
	return d, nil
}

// leave logs d out, which removes its ephemeral node at once, and stops it.
func leave(d *tailscaledtest.Daemon) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = d.CLI(ctx, "logout")
	d.Close()
}

func withSocket(argv []string, socket string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = strings.ReplaceAll(a, socketPlaceholder, socket)
	}
	return out
}

func printEnv(env []string) {
	fmt.Println("# A local Headscale for TSymbiote development, until Ctrl-C here (or in the devcp that started it).")
	for _, kv := range env {
		fmt.Println("export " + kv)
	}
}

// runCommand runs argv with env added until it exits or ctx ends. Ctrl-C
// in a terminal reaches the command too (same process group); SIGTERM also
// covers a devcp stopped alone.
func runCommand(ctx context.Context, logf func(string, ...any), argv, env []string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	// waitErr is written before done closes and read only after.
	var waitErr error
	done := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(done) }()
	select {
	case <-done:
		return exitStatus(waitErr)
	case <-ctx.Done():
	}
	// Stopped by a signal: the command's exit status is not news.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(stopGrace):
		logf("devcp: %s did not stop within %v; killing it", argv[0], stopGrace)
		_ = cmd.Process.Kill()
		<-done
	}
	return nil
}

func exitStatus(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &exitError{code: ee.ExitCode()}
	}
	return err
}
