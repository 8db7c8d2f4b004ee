// Package cluster runs a real one-node Kubernetes cluster on this host, for
// the tests that need kubelet, containerd and the charts, and for people
// (`make cluster`).
//
// The node is made of the pinned builds in ./bin (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, the
// reference bridge and host-local CNI plugins) and Debian's containerd and
// runc. Its address is on a veth pair of its own, so that pods (which cannot
// reach the host's loopback) reach the API server and a Headscale with
// MagicDNS that the harness runs there, and the cluster DNS (Service
// kube-system/kube-dns at ClusterDNSIP, see clusterDNS) that kubelet gives
// ClusterFirst pods. Only one node can run on a host at a
// time: it owns /etc/cni/net.d, /opt/cni/bin and kubelet's fixed paths. Stop
// deletes the pods, stops every process and puts back everything the node
// changed on the host (see hostState).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// Options configure a cluster. The zero value is ready to use.
type Options struct {
	// NodeIP is the node's address; 10.213.0.1 when empty. It lives on a
	// veth pair the harness makes, so pick an address no host network uses.
	NodeIP string
	// Images are image tarballs (docker-archive, as hack/images writes) to
	// import into the node's containerd. The pause image must be one.
	Images []string
	// HeadscalePolicy is Headscale's initial policy; headscaletest's open
	// policy when empty.
	HeadscalePolicy string
	// Logf receives progress lines; discarded when nil.
	Logf func(format string, args ...any)
}

// Step is one phase of starting or stopping the cluster and how long it took.
type Step struct {
	Name string
	Took time.Duration
}

// Cluster is a running node. Its methods are safe for concurrent use.
type Cluster struct {
	Dir        string // everything of the cluster's own: PKI, data, logs
	Kubeconfig string // an admin (system:masters) kubeconfig
	NodeName   string
	NodeIP     string
	APIServer  string                // https://NodeIP:port
	Headscale  *headscaletest.Server // on NodeIP, MagicDNS on
	// ContainerdSocket is the node's containerd, for `ctr --address`.
	ContainerdSocket string

	etcdURL string

	logf     func(string, ...any)
	host     *hostState
	lock     *os.File
	bin      map[string]string
	mu       sync.Mutex
	steps    []Step
	procs    map[string]*testkit.Process
	dns      *clusterDNS // nil until its phase
	stopOnce sync.Once
	stopErr  error
}

// Components the node runs, started in this order and stopped in reverse.
var components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet", "kube-proxy"}

// binaries are what the harness needs from ./bin (or $NAME_BIN).
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl", "helm", "headscale", "cni-bridge", "cni-host-local", "cni-loopback"}

// ownLinks are the links a node makes (its address's veth pair, the
// bridge and the bridge plugin's veths), for restore to delete.
var ownLinks = []string{nodeLink, bridgeName, "veth*"}

// Host names and links the node owns.
const (
	nodeLink     = "tsymnode0" // holds the node's address; its peer is tsymnode1
	lockPath     = "/run/tsymbiote-cluster.lock"
	defaultNode  = "tsymbiote-node"
	defaultIP    = "10.213.0.1"
	startTimeout = 3 * time.Minute
)

// LockWait is how long Start waits for another cluster on the host to stop.
const LockWait = 15 * time.Minute

// Start starts a cluster for t and stops it when t ends. It needs root and
// the pinned builds; without them it skips t, or fails it under CI=true.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	testkit.Root(t)
	if missing := MissingPrerequisites(); missing != "" {
		testkit.Missing(t, "%s", missing)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	// Up to LockWait waiting for another test's cluster, then startTimeout.
	ctx, cancel := context.WithTimeout(context.Background(), LockWait+startTimeout)
	defer cancel()
	c, err := StartIn(ctx, filepath.Join(os.TempDir(), fmt.Sprintf("tsymbiote-cluster-%d", os.Getpid())), opts)
	if err != nil {
		t.Fatalf("starting cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping cluster: %v", err)
		}
	})
	return c
}

// MissingPrerequisites names what this host lacks for a cluster (binaries
// in ./bin, Debian packages), or returns "".
func MissingPrerequisites() string {
	var missing []string
	for _, b := range binaries {
		if _, err := testkit.FindBinary(b); err != nil {
			missing = append(missing, b+" (make tools)")
		}
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b+" (make deps)")
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return "cluster needs " + strings.Join(missing, ", ")
}

// StartIn starts a cluster whose files live in dir, which must not exist
// or be empty; Stop removes it. On error everything started is stopped
// and the host restored.
func StartIn(ctx context.Context, dir string, opts Options) (_ *Cluster, err error) {
	c := &Cluster{Dir: dir, NodeName: defaultNode, NodeIP: opts.NodeIP, logf: opts.Logf, procs: map[string]*testkit.Process{}, bin: map[string]string{}}
	if c.NodeIP == "" {
		c.NodeIP = defaultIP
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	if net.ParseIP(c.NodeIP).To4() == nil {
		return nil, fmt.Errorf("node IP %q is not an IPv4 address", c.NodeIP)
	}
	if err := c.takeHost(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()
	phases := []struct {
		name string
		run  func(context.Context, Options) error
	}{
		{"host network", c.startHostNetwork},
		{"certificates", c.writePKI},
		{"headscale", c.startHeadscale},
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"controllers", c.startControllers},
		{"containerd", c.startContainerd},
		{"images", c.importImages},
		{"kubelet", c.startKubelet},
		{"node ready", c.waitNodeReady},
		{"cluster dns", c.startClusterDNS},
	}
	all := time.Now()
	for _, p := range phases {
		start := time.Now()
		if err := p.run(ctx, opts); err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		c.record(p.name, time.Since(start))
	}
	c.record("cluster start", time.Since(all))
	return c, nil
}

func (c *Cluster) record(name string, d time.Duration) {
	c.mu.Lock()
	c.steps = append(c.steps, Step{name, d})
	c.mu.Unlock()
	c.logf("cluster: %s took %.1fs", name, d.Seconds())
}

// Steps are the phases of start (and of Stop, once it ran) with their
// wall times, in order.
func (c *Cluster) Steps() []Step {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Step(nil), c.steps...)
}

// takeHost locks the host for this cluster, finds the binaries, and
// records the host's state so that Stop can restore it.
func (c *Cluster) takeHost(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("a cluster needs root (kubelet, containerd, network namespaces)")
	}
	if missing := MissingPrerequisites(); missing != "" {
		return errors.New(missing)
	}
	for _, b := range binaries {
		c.bin[b], _ = testkit.FindBinary(b)
	}
	if err := c.takeLock(ctx); err != nil {
		return err
	}
	if err := recoverAbandoned(c.logf); err != nil {
		c.releaseLock()
		return err
	}
	if entries, err := os.ReadDir(c.Dir); err == nil && len(entries) > 0 {
		c.releaseLock()
		return fmt.Errorf("cluster directory %s is not empty", c.Dir)
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "logs"), 0o755); err != nil {
		c.releaseLock()
		return err
	}
	h, err := snapshotHost()
	if err == nil {
		err = h.conflict()
	}
	if err == nil {
		err = h.save(abandoned{Dir: c.Dir, ContainerdSocket: c.path("containerd", "containerd.sock")})
	}
	if err != nil {
		c.releaseLock()
		os.RemoveAll(c.Dir)
		return err
	}
	c.host = h
	return nil
}

// takeLock waits for the host's cluster lock until ctx ends: tests in
// different packages (or a person's `make cluster`) take turns. The lock
// file is removed on release, so a waiter that wins a lock on a removed
// file tries again on the new one.
func (c *Cluster) takeLock(ctx context.Context) error {
	for {
		f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return err
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			held, err1 := f.Stat()
			now, err2 := os.Stat(lockPath)
			if err1 == nil && err2 == nil && os.SameFile(held, now) {
				c.lock = f
				return nil
			}
		}
		f.Close()
		select {
		case <-ctx.Done():
			return fmt.Errorf("another cluster runs on this host (%s stayed locked)", lockPath)
		case <-time.After(time.Second):
		}
	}
}

// WaitIdle waits until no cluster runs on the host (or ctx ends), for a
// test that fingerprints the host before it starts one in a subprocess.
// Another cluster may start right after it returns: only tests that run
// one at a time can rely on it, as make test's modules do.
func WaitIdle(ctx context.Context) error {
	var c Cluster
	if err := c.takeLock(ctx); err != nil {
		return err
	}
	c.releaseLock()
	return nil
}

func (c *Cluster) releaseLock() {
	if c.lock != nil {
		os.Remove(lockPath)
		c.lock.Close()
		c.lock = nil
	}
}

// startHostNetwork gives the node its address, lets pods' packets be
// forwarded (to the node address and between the pods' networks), and
// lets pods' network namespaces propagate into containers that mount them.
func (c *Cluster) startHostNetwork(context.Context, Options) error {
	cmds := [][]string{
		{"link", "add", nodeLink, "type", "veth", "peer", "name", "tsymnode1"},
		{"addr", "add", c.NodeIP + "/32", "dev", nodeLink},
		{"link", "set", nodeLink, "up"},
		{"link", "set", "tsymnode1", "up"},
	}
	for _, args := range cmds {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if err := c.host.shareNetnsMount(); err != nil {
		return err
	}
	// Saved again: restore after a crash must undo the shared mount too.
	return c.host.save(abandoned{Dir: c.Dir, ContainerdSocket: c.path("containerd", "containerd.sock")})
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

// launch starts a component with its output in logs/<name>.log.
func (c *Cluster) launch(name string, args ...string) error {
	bin := c.bin[name]
	if bin == "" {
		bin = name // from PATH: containerd
	}
	logFile, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	p, err := testkit.Launch(cmd)
	if err != nil {
		logFile.Close()
		return err
	}
	// Launch copies the output through a pipe: the file stays open as long
	// as the process runs.
	go func() {
		<-p.Done()
		logFile.Close()
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	return nil
}

// waitUntil polls check every 250 ms until it returns nil, the component
// named exits, or ctx ends; the error then says which and shows the
// component's log tail.
func (c *Cluster) waitUntil(ctx context.Context, component string, check func(context.Context) error) error {
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		c.mu.Lock()
		p := c.procs[component]
		c.mu.Unlock()
		var exited <-chan struct{}
		if p != nil {
			exited = p.Done()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w; log tail:\n%s", component, last, c.logTail(component))
		case <-exited:
			return fmt.Errorf("%s exited (%w); log tail:\n%s", component, p.Err(), c.logTail(component))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// logTail is the last lines of a component's log.
func (c *Cluster) logTail(name string) string {
	b, _ := os.ReadFile(c.path("logs", name+".log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-25):], "\n")
}

// Kubectl runs the pinned kubectl as the cluster's admin and returns its
// combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.run(ctx, nil, "kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
}

// KubectlIn is Kubectl with stdin.
func (c *Cluster) KubectlIn(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	return c.run(ctx, stdin, "kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
}

// Helm runs the pinned helm against the cluster.
func (c *Cluster) Helm(ctx context.Context, args ...string) (string, error) {
	return c.run(ctx, nil, "helm", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
}

func (c *Cluster) run(ctx context.Context, stdin io.Reader, tool string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.bin[tool], args...)
	cmd.Stdin = stdin
	// Helm keeps its caches and repositories config under the cluster's
	// directory, not the user's home.
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+c.path("helm", "cache"), "HELM_CONFIG_HOME="+c.path("helm", "config"), "HELM_DATA_HOME="+c.path("helm", "data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Ctr runs ctr against the node's containerd in the k8s.io namespace.
func (c *Cluster) Ctr(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.ContainerdSocket, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Stop deletes every pod, stops every component and restores the host, as
// far as it can, reporting what it could not. It is safe to call more
// than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Cluster) stop() error {
	start := time.Now()
	var errs []error
	// Controllers first, so that nothing recreates what is deleted next.
	c.stopComponent("kube-controller-manager")
	c.stopComponent("kube-scheduler")
	if c.procs["kubelet"] != nil && c.procs["kube-apiserver"] != nil {
		errs = append(errs, c.deletePods())
	}
	for i := len(components) - 1; i >= 0; i-- {
		c.stopComponent(components[i])
	}
	if c.bin["kube-proxy"] != "" {
		// Removes the rules kube-proxy made in every mode.
		_ = exec.Command(c.bin["kube-proxy"], "--cleanup").Run()
	}
	if c.Headscale != nil {
		c.Headscale.Stop()
	}
	c.mu.Lock()
	dns := c.dns
	c.dns = nil
	c.mu.Unlock()
	if dns != nil {
		dns.stop()
	}
	if c.host != nil {
		err := c.host.restore(c.Dir, c.ContainerdSocket, ownLinks)
		if err == nil {
			err = os.Remove(statePath)
		}
		errs = append(errs, err)
	}
	errs = append(errs, os.RemoveAll(c.Dir))
	c.releaseLock()
	c.record("cluster stop", time.Since(start))
	return errors.Join(errs...)
}

func (c *Cluster) stopComponent(name string) {
	c.mu.Lock()
	p := c.procs[name]
	delete(c.procs, name)
	c.mu.Unlock()
	if p != nil {
		_ = p.Stop(testkit.StopGrace)
	}
}

// deletePods deletes every pod, the ones on the pod network before those on
// the host's (a CNI daemon among them must still run to take its pods'
// networks down), and waits for kubelet to have stopped them.
func (c *Cluster) deletePods() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	for _, hostNetwork := range []bool{false, true} {
		out, err := c.Kubectl(ctx, "get", "pods", "-A", "-o",
			`jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}/{.spec.hostNetwork}{"\n"}{end}`)
		if err != nil {
			return err
		}
		byNamespace := map[string][]string{}
		for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
			f := strings.Split(line, "/")
			if len(f) == 3 && (f[2] == "true") == hostNetwork {
				byNamespace[f[0]] = append(byNamespace[f[0]], f[1])
			}
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for ns, pods := range byNamespace {
			wg.Go(func() {
				args := append([]string{"delete", "pod", "-n", ns, "--wait=true", "--timeout=60s"}, pods...)
				if _, err := c.Kubectl(ctx, args...); err != nil {
					// A pod stuck in deletion is forced, so that teardown goes on.
					_, ferr := c.Kubectl(ctx, append([]string{"delete", "pod", "-n", ns, "--grace-period=0", "--force"}, pods...)...)
					mu.Lock()
					errs = append(errs, fmt.Errorf("pods in %s did not stop in time (forced): %w", ns, errors.Join(err, ferr)))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	return errors.Join(errs...)
}
