// Command tailscale-cni-daemon is the node daemon of tailscale-cni: one per
// node (a DaemonSet), it runs one tailnet node per pod and serves the
// tailscale-cni shim over a unix socket.
//
// Configuration is by flags and by the environment: the control plane as in
// every TSymbiote daemon (TS_OAUTH_CLIENT_ID/TS_OAUTH_CLIENT_SECRET or
// TS_API_KEY for Tailscale, HEADSCALE_URL/HEADSCALE_API_KEY for Headscale,
// TS_CONTROL_URL), and CLUSTER_NAME (default k8s), TS_TAGS (default
// tag:k8s-pod), AUTH_KEY_TTL (default 5m), TS_CNI_EPHEMERAL and TS_CNI_IPV6
// (default true).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"tailscale.com/envknob"
	"tailscale.com/net/netmon"
	"tailscale.com/types/logger"
	"tailscale.com/util/eventbus"
	"tsymbiote.dhouti.dev/cni/internal/daemon"
	"tsymbiote.dhouti.dev/cni/internal/poddns"
	"tsymbiote.dhouti.dev/cni/internal/podmeta"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/proto/contract"
)

func main() {
	if err := newCommand(os.Getenv).Execute(); err != nil {
		log.Fatalf("tailscale-cni-daemon: %v", err)
	}
}

// flags are the daemon's command-line settings; the rest of its
// configuration comes from the environment (see the package comment).
type flags struct {
	socket, stateDir, runDir, metricsAddr string
	debugAddr                             string
	procSysNet                            string
	clusterDNS                            string
	addTimeout, publishWait, sweep        time.Duration
	poolSize                              int
	poolTuning                            daemon.PoolTuning
	waitRunning, verbose                  bool
}

// newCommand is the daemon's command; getenv reads the environment
// (os.Getenv outside tests), which also gives some flags their defaults.
func newCommand(getenv func(string) string) *cobra.Command {
	var fl flags
	cmd := &cobra.Command{
		Use:   "tailscale-cni-daemon",
		Short: "Run one tailnet node per pod and serve the tailscale-cni shim",
		Long: `tailscale-cni-daemon is the node daemon of tailscale-cni: one per node, it
runs one tailnet node per pod and serves the tailscale-cni shim over a unix
socket.

Environment: the control plane (TS_OAUTH_CLIENT_ID/TS_OAUTH_CLIENT_SECRET or
TS_API_KEY, HEADSCALE_URL/HEADSCALE_API_KEY, TS_CONTROL_URL), CLUSTER_NAME
(default ` + daemon.DefaultClusterName + `), TS_TAGS (default ` + contract.TagPod + `), AUTH_KEY_TTL (default 5m),
TS_CNI_EPHEMERAL (default true), TS_CNI_IPV6 (default true).`,
		Args:          cobra.NoArgs,
		SilenceErrors: true, // main logs it
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true // past the flags, an error is no usage mistake
			return run(cmd.Context(), getenv, fl)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.socket, "socket", envOr(getenv, "TS_CNI_SOCKET", daemon.DefaultSocket), "unix socket the shim connects to (env TS_CNI_SOCKET)")
	f.StringVar(&fl.stateDir, "state-dir", envOr(getenv, "TS_CNI_STATE_DIR", daemon.DefaultStateDir), "pod state (node identities) lives under <dir>/pods (env TS_CNI_STATE_DIR)")
	f.StringVar(&fl.runDir, "run-dir", envOr(getenv, "TS_CNI_RUN_DIR", daemon.DefaultRunDir), "per-pod LocalAPI sockets live under <dir>/pods (env TS_CNI_RUN_DIR)")
	f.StringVar(&fl.metricsAddr, "metrics-addr", envOr(getenv, "TS_CNI_METRICS_ADDR", "127.0.0.1:9392"), "loopback address for /metrics and /healthz; empty turns them off (env TS_CNI_METRICS_ADDR)")
	f.StringVar(&fl.debugAddr, "debug-addr", getenv("TS_CNI_DEBUG_ADDR"), "loopback address to serve Go's profiles (/debug/pprof/) on, for measuring the daemon; empty (the default) turns them off (env TS_CNI_DEBUG_ADDR)")
	f.StringVar(&fl.procSysNet, "proc-sys-net", envOr(getenv, "TS_CNI_PROC_SYS_NET", "/proc/sys/net"), "the host's net sysctls, for forwarding and rp_filter: a container's own /proc/sys is read-only, so the chart mounts the node's elsewhere (env TS_CNI_PROC_SYS_NET)")
	f.DurationVar(&fl.addTimeout, "add-timeout", daemon.DefaultAddTimeout, "how long ADD waits for a pod's node to run")
	f.DurationVar(&fl.publishWait, "publish-wait", daemon.DefaultPublishWait, "how long ADD waits, once the pod's node has its addresses, for the control plane to hold its endpoints, so that peers reach it at once (negative: do not wait)")
	f.BoolVar(&fl.waitRunning, "add-waits-for-running", false, "make ADD wait until the pod's node is Running (has a home DERP, seconds later) instead of only registered with its addresses")
	f.StringVar(&fl.clusterDNS, "cluster-dns", getenv("TS_CNI_CLUSTER_DNS"), "the cluster DNS address in pods' resolv.conf (kubelet's --cluster-dns): serve MagicDNS in pods there and forward other names to it; empty turns MagicDNS in pods off (env TS_CNI_CLUSTER_DNS)")
	sweep := daemon.DefaultSweepInterval
	if d, err := time.ParseDuration(getenv("TS_CNI_SWEEP_INTERVAL")); err == nil {
		sweep = d
	}
	f.DurationVar(&fl.sweep, "sweep-interval", sweep, "how often to remove pods whose netns is gone without a DEL, for runtimes that never call GC; 0 turns it off (env TS_CNI_SWEEP_INTERVAL)")
	poolSize := daemon.DefaultPoolSize
	if n, err := strconv.Atoi(getenv("TS_CNI_POOL_SIZE")); err == nil {
		poolSize = n
	}
	f.IntVar(&fl.poolSize, "pool-size", poolSize, "how many nodes to keep registered and running ahead of pods with the default tags (TS_TAGS), so that their ADD only wires one in; each idle one costs a node's memory and a place in every peer's netmap; 0 turns the pool off (env TS_CNI_POOL_SIZE)")
	pt, _ := daemon.PoolTuningFromEnv(getenv) // bad values fail in configFromEnv
	f.IntVar(&fl.poolTuning.Max, "pool-max", pt.Max, "how far the pool may grow while ADDs find it empty (a burst of pods); it shrinks back to --pool-size after --pool-idle without ADDs; 0 is four times --pool-size, --pool-size turns growth off (env TS_CNI_POOL_MAX)")
	f.IntVar(&fl.poolTuning.Parallel, "pool-parallel", pt.Parallel, "how many pool nodes may start at once; 0 is "+strconv.Itoa(daemon.DefaultPoolParallel)+" (env TS_CNI_POOL_PARALLEL)")
	f.DurationVar(&fl.poolTuning.Idle, "pool-idle", pt.Idle, "how long a grown pool waits without ADDs before it deletes its nodes beyond --pool-size; 0 is "+daemon.DefaultPoolIdle.String()+" (env TS_CNI_POOL_IDLE)")
	f.BoolVar(&fl.verbose, "verbose", false, "log every line of the pods' tailscale backends, not only the ones that matter")
	return cmd
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}

func envBool(getenv func(string) string, k string, def bool) (bool, error) {
	v := getenv(k)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q is not a boolean", k, v)
	}
	return b, nil
}

// configFromEnv is the daemon's configuration: fl and the environment.
func configFromEnv(getenv func(string) string, fl flags) (daemon.Config, error) {
	cfg := daemon.Config{
		ClusterName:        envOr(getenv, "CLUSTER_NAME", daemon.DefaultClusterName),
		StateDir:           fl.stateDir,
		RunDir:             fl.runDir,
		AddTimeout:         fl.addTimeout,
		AddWaitsForRunning: fl.waitRunning,
		PublishWait:        fl.publishWait,
		PoolSize:           fl.poolSize,
	}
	if v := getenv("TS_CNI_POOL_SIZE"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			return cfg, fmt.Errorf("TS_CNI_POOL_SIZE=%q is not a count of nodes (0 or more)", v)
		}
	}
	if fl.poolSize < 0 {
		return cfg, fmt.Errorf("--pool-size %d: want 0 or more", fl.poolSize)
	}
	if _, err := daemon.PoolTuningFromEnv(getenv); err != nil {
		return cfg, err
	}
	if err := fl.poolTuning.Validate(fl.poolSize); err != nil {
		return cfg, err
	}
	cfg.PoolTuning = fl.poolTuning
	var err error
	if cfg.Tags, err = daemon.ParseTags(envOr(getenv, "TS_TAGS", contract.TagPod)); err != nil {
		return cfg, err
	}
	if v := getenv("AUTH_KEY_TTL"); v != "" {
		if cfg.AuthKeyTTL, err = time.ParseDuration(v); err != nil || cfg.AuthKeyTTL <= 0 {
			return cfg, fmt.Errorf("AUTH_KEY_TTL=%q is not a positive duration like 5m", v)
		}
	}
	if cfg.Ephemeral, err = envBool(getenv, "TS_CNI_EPHEMERAL", true); err != nil {
		return cfg, err
	}
	if cfg.IPv6, err = envBool(getenv, "TS_CNI_IPV6", true); err != nil {
		return cfg, err
	}
	// Undocumented in --help: a measurement knob for the benchmark.
	if cfg.Netstack, err = envBool(getenv, "TS_CNI_DEBUG_NETSTACK", false); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func run(ctx context.Context, getenv func(string) string, fl flags) error {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	logf := logger.Logf(log.Printf)

	cfg, err := configFromEnv(getenv, fl)
	if err != nil {
		return err
	}
	cpCfg, err := controlplane.ConfigFromEnv(getenv)
	if err != nil {
		return err
	}

	// Offline-clean: no log upload, no support telemetry.
	envknob.SetNoLogsNoSupport()
	ifaces := newIfaceCache(hostInterfaces)
	netmon.RegisterInterfaceGetter(ifaces.get)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if u, err := url.Parse(cpCfg.EffectiveControlURL()); err == nil && u.Scheme == "http" && getenv("TS_DEBUG_USE_DERP_HTTP") == "" {
		// A control server on plain HTTP (a Headscale in a lab or test)
		// serves its embedded DERP on plain HTTP too.
		envknob.Setenv("TS_DEBUG_USE_DERP_HTTP", "1")
		logf("control URL is plain HTTP; talking plain HTTP to its DERP too")
	}
	backendLogf := logf
	if !fl.verbose {
		backendLogf = daemon.QuietLogf(logf)
	}

	podnet.SetProcSysNet(fl.procSysNet)
	cp, err := controlplane.New(logger.WithPrefix(logf, "controlplane: "), cpCfg)
	if err != nil {
		return err
	}
	metrics := daemon.NewMetrics()
	cfg.BackendLogf = backendLogf
	deps := daemon.Deps{
		ControlPlane: cp,
		Network:      podnet.Host{},
		StartBackend: daemon.StartPodBackend,
		NewNetMon: func(bus *eventbus.Bus, logf logger.Logf) (*netmon.Monitor, error) {
			nm, err := netmon.New(bus, logf)
			if err == nil {
				go watchHost(watchCtx, logf, ifaces, nm.Poll)
			}
			return nm, err
		},
		Metrics: metrics,
	}
	if fl.clusterDNS != "" {
		ip, err := netip.ParseAddr(fl.clusterDNS)
		if err != nil || !ip.Is4() {
			return fmt.Errorf("--cluster-dns %q is not an IPv4 address", fl.clusterDNS)
		}
		deps.DNS = daemon.NewDNSService(ip)
		logf("MagicDNS in pods: on %v and %v, other names forwarded to %v", ip, poddns.QuadHundred, ip)
	}
	if src, err := podSource(getenv); err != nil {
		return err
	} else if src != nil {
		deps.Pods = src
		logf("pod annotations: read from %s", src.Server)
	} else {
		logf("pod annotations: off (no API server: not in a cluster and TS_CNI_KUBE_API unset)")
	}
	m, err := daemon.NewManager(logf, cfg, deps)
	if err != nil {
		return err
	}
	defer m.Close()

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	m.SetReady(errors.New("starting"))
	ln, err := daemon.Listen(fl.socket)
	if err != nil {
		return err
	}
	g := daemon.NewServer(m).GRPCServer()
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()
	defer os.Remove(fl.socket)

	if fl.metricsAddr != "" {
		if err := checkLoopback(fl.metricsAddr); err != nil {
			return err
		}
		mln, err := net.Listen("tcp", fl.metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		hs := &http.Server{Handler: metrics.Handler(func() error { _, e := m.Status(); return e }), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(mln) }()
		defer hs.Close()
	}

	if fl.debugAddr != "" {
		stopDebug, err := serveDebug(logf, fl.debugAddr)
		if err != nil {
			return err
		}
		defer stopDebug()
	}

	go verifyLoop(ctx, logf, cp, m)
	go releaseMemory(ctx)
	go m.RetryDeletes(ctx, time.Minute)
	if fl.sweep > 0 {
		go m.SweepGone(ctx, fl.sweep)
	}
	rec, removed := m.Recover(ctx)
	logf("tailscale-cni-daemon: serving %s; recovered %d pods, removed %d leftovers", fl.socket, rec, removed)
	m.StartPool(ctx)
	<-ctx.Done()
	logf("tailscale-cni-daemon: shutting down; pods keep their state for the next start, pool nodes are deleted")
	return nil
}

// podSource is the API server client that reads pods' annotations: the
// in-cluster one in a pod (the chart's ServiceAccount), the one
// TS_CNI_KUBE_API, TS_CNI_KUBE_TOKEN_FILE and TS_CNI_KUBE_CA_FILE name
// outside, or nil.
func podSource(getenv func(string) string) (*podmeta.Client, error) {
	if api := getenv("TS_CNI_KUBE_API"); api != "" {
		c, err := podmeta.New(api, getenv("TS_CNI_KUBE_TOKEN_FILE"), getenv("TS_CNI_KUBE_CA_FILE"))
		if err != nil {
			return nil, fmt.Errorf("TS_CNI_KUBE_API: %w", err)
		}
		return c, nil
	}
	if getenv("KUBERNETES_SERVICE_HOST") == "" {
		return nil, nil
	}
	c, err := podmeta.InCluster(getenv, podmeta.ServiceAccountDir)
	if err != nil {
		return nil, fmt.Errorf("reading pods' annotations: %w", err)
	}
	return c, nil
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
