// Command tailscale-cni-daemon is the node daemon of tailscale-cni: one per
// node (a DaemonSet), it runs one tailnet node per pod and serves the
// tailscale-cni shim over a unix socket.
//
// Configuration is by flags and by the environment: the control plane as in
// every TSymbiote daemon (TS_OAUTH_CLIENT_ID/TS_OAUTH_CLIENT_SECRET or
// TS_API_KEY for Tailscale, HEADSCALE_URL/HEADSCALE_API_KEY for Headscale,
// TS_CONTROL_URL), and CLUSTER_NAME (default k8s), TS_TAGS (default
// tag:k8s-pod), AUTH_KEY_TTL (default 5m).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"tailscale.com/envknob"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/cni/internal/daemon"
	"tsymbiote.dhouti.dev/controlplane"
)

func main() {
	if err := run(); err != nil {
		log.Fatalf("tailscale-cni-daemon: %v", err)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envBool(k string, def bool) (bool, error) {
	v := os.Getenv(k)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q is not a boolean", k, v)
	}
	return b, nil
}

func run() error {
	var (
		socket      = flag.String("socket", envOr("TS_CNI_SOCKET", daemon.DefaultSocket), "unix socket the shim connects to (env TS_CNI_SOCKET)")
		stateDir    = flag.String("state-dir", envOr("TS_CNI_STATE_DIR", daemon.DefaultStateDir), "pod state (node identities) lives under <dir>/pods (env TS_CNI_STATE_DIR)")
		runDir      = flag.String("run-dir", envOr("TS_CNI_RUN_DIR", daemon.DefaultRunDir), "per-pod LocalAPI sockets live under <dir>/pods (env TS_CNI_RUN_DIR)")
		metricsAddr = flag.String("metrics-addr", envOr("TS_CNI_METRICS_ADDR", "127.0.0.1:9392"), "loopback address for /metrics and /healthz; empty turns them off (env TS_CNI_METRICS_ADDR)")
		addTimeout  = flag.Duration("add-timeout", daemon.DefaultAddTimeout, "how long ADD waits for a pod's node to run")
		publishWait = flag.Duration("publish-wait", daemon.DefaultPublishWait, "how long ADD waits, once the pod's node has its addresses, for the control plane to hold its endpoints, so that peers reach it at once (negative: do not wait)")
		waitRunning = flag.Bool("add-waits-for-running", false, "make ADD wait until the pod's node is Running (has a home DERP, seconds later) instead of only registered with its addresses")
		verbose     = flag.Bool("verbose", false, "log every line of the pods' tailscale backends, not only the ones that matter")
	)
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	logf := logger.Logf(log.Printf)

	cfg := daemon.Config{
		ClusterName:        envOr("CLUSTER_NAME", daemon.DefaultClusterName),
		StateDir:           *stateDir,
		RunDir:             *runDir,
		AddTimeout:         *addTimeout,
		AddWaitsForRunning: *waitRunning,
		PublishWait:        *publishWait,
	}
	var err error
	if cfg.Tags, err = daemon.ParseTags(envOr("TS_TAGS", daemon.DefaultTag)); err != nil {
		return err
	}
	if v := os.Getenv("AUTH_KEY_TTL"); v != "" {
		if cfg.AuthKeyTTL, err = time.ParseDuration(v); err != nil || cfg.AuthKeyTTL <= 0 {
			return fmt.Errorf("AUTH_KEY_TTL=%q is not a positive duration like 5m", v)
		}
	}
	if cfg.Ephemeral, err = envBool("TS_CNI_EPHEMERAL", true); err != nil {
		return err
	}
	if cfg.IPv6, err = envBool("TS_CNI_IPV6", true); err != nil {
		return err
	}
	cpCfg, err := controlplane.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}

	// Offline-clean: no log upload, no support telemetry.
	envknob.SetNoLogsNoSupport()
	if u, err := url.Parse(cpCfg.EffectiveControlURL()); err == nil && u.Scheme == "http" && os.Getenv("TS_DEBUG_USE_DERP_HTTP") == "" {
		// A control server on plain HTTP (a Headscale in a lab or test)
		// serves its embedded DERP on plain HTTP too.
		envknob.Setenv("TS_DEBUG_USE_DERP_HTTP", "1")
		logf("control URL is plain HTTP; talking plain HTTP to its DERP too")
	}
	backendLogf := logf
	if !*verbose {
		backendLogf = daemon.QuietLogf(logf)
	}

	cp, err := controlplane.New(logger.WithPrefix(logf, "controlplane: "), cpCfg)
	if err != nil {
		return err
	}
	metrics := daemon.NewMetrics()
	cfg.BackendLogf = backendLogf
	m, err := daemon.NewManager(logf, cfg, cp, metrics)
	if err != nil {
		return err
	}
	defer m.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	m.SetReady(errors.New("starting"))
	ln, err := daemon.Listen(*socket)
	if err != nil {
		return err
	}
	g := daemon.NewServer(m).GRPCServer()
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()
	defer os.Remove(*socket)

	if *metricsAddr != "" {
		if err := checkLoopback(*metricsAddr); err != nil {
			return err
		}
		mln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		hs := &http.Server{Handler: metrics.Handler(func() error { _, e := m.Status(); return e }), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(mln) }()
		defer hs.Close()
	}

	go verifyLoop(ctx, logf, cp, m)
	go releaseMemory(ctx)
	go m.RetryDeletes(ctx, time.Minute)
	rec, removed := m.Recover(ctx)
	logf("tailscale-cni-daemon: serving %s; recovered %d pods, removed %d leftovers", *socket, rec, removed)
	<-ctx.Done()
	logf("tailscale-cni-daemon: shutting down; pods keep their state for the next start")
	return nil
}

// releaseMemory hands freed heap back to the kernel every 30 s. Each pod's
// WireGuard device and TUN take packet buffers (64 KiB each, in batches of
// 128) from pools that a burst fills and the GC later frees; Go's scavenger
// returns those pages slowly, so without this the daemon's RSS stays at its
// high-water mark, several MiB per pod.
func releaseMemory(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			debug.FreeOSMemory()
		}
	}
}

// verifyLoop marks the daemon ready once the control plane answers, and
// keeps checking so that STATUS and /healthz tell the truth.
func verifyLoop(ctx context.Context, logf logger.Logf, cp controlplane.Client, m *daemon.Manager) {
	last := errors.New("starting")
	first := true
	for {
		vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cp.Verify(vctx)
		cancel()
		if err != nil {
			err = fmt.Errorf("control plane: %w", err)
		}
		m.SetReady(err)
		if first || (err == nil) != (last == nil) {
			if err != nil {
				logf("not ready: %v", err)
			} else {
				logf("control plane %s reachable; ready", cp.Backend())
			}
		}
		last, first = err, false
		wait := 30 * time.Second
		if err != nil {
			wait = 3 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--metrics-addr %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--metrics-addr %q must be a loopback address", addr)
	}
	return nil
}
