package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// tsVersionLDFlags stamps the tailscale version the daemon embeds, as
// hack/build-bin.sh does for the stock binaries, so that the stock CLI does
// not warn about a version mismatch.
func tsVersionLDFlags() string {
	v, err := testkit.PinnedVersion("TAILSCALE_VERSION")
	if err != nil {
		return ""
	}
	v = strings.TrimPrefix(v, "v")
	return "-X tailscale.com/version.longStamp=" + v + " -X tailscale.com/version.shortStamp=" + v
}

// binaries makes one CNI bin dir, as kubelet's /opt/cni/bin: the shim and
// the daemon (built once per test binary) and the pinned reference
// plugins, each linked under its plugin type.
func binaries(t testing.TB) string {
	t.Helper()
	flags := []string{"-tags", "ts_omit_portmapper", "-ldflags", tsVersionLDFlags()}
	if os.Getenv("TSCNI_E2E_RACE") != "" {
		// The daemon is another process: -race on the test binary does
		// not reach it.
		flags = append(flags, "-race")
	}
	links := map[string]string{}
	for _, cmd := range []string{"tailscale-cni", "tailscale-cni-daemon"} {
		links[cmd] = testkit.BuildOnce(t, "tsymbiote.dhouti.dev/cni/cmd/"+cmd, flags...)
	}
	for _, p := range []string{"bridge", "ptp", "host-local", "loopback"} {
		links[p] = testkit.Binary(t, "cni-"+p)
	}
	dir := t.TempDir()
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// env is one test's world: a Headscale on a host veth address, a daemon
// process, a CNI config chaining tailscale-cni after bridge, and the
// namespaces and containers the test made (all removed in Cleanup).
type env struct {
	t       testing.TB
	id      string // random, names everything the test makes
	hs      *headscaletest.Server
	cp      controlplane.Client // a client of hs
	bins    string
	dir     string // daemon dirs, CNI cache, IPAM state
	socket  string
	metrics string
	bridge  string
	subnet  string
	hsNet   string // Headscale's /30
	conf    *libcni.NetworkConfigList
	cni     *libcni.CNIConfig

	mu         sync.Mutex
	daemon     *testkit.Process
	daemonLog  *testkit.Buffer // all of the daemon's output, for line counts
	netnses    []string
	containers []string
	extraEnv   []string
	// stock are the stock tailscaleds the benchmark runs, by number.
	stock map[int]*testkit.Process
}

// hostVeth makes a veth pair whose host end holds addr/30, so that Headscale
// can listen on an address that is not the host's loopback. Its peer is left
// down in the host: nothing routes through it.
func hostVeth(t testing.TB, name string, addr string) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	veth := &netlink.Veth{LinkAttrs: la, PeerName: name + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("creating %s: %v", name, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	// No IPv6 on this pair: link-local addresses would appear seconds
	// later and skew the before/after route counts.
	for _, n := range []string{name, name + "p"} {
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+n+"/disable_ipv6", []byte("1"), 0o644)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.ParseAddr(addr)
	if err := netlink.AddrAdd(l, a); err != nil {
		t.Fatalf("adding %s to %s: %v", addr, name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	if p, err := netlink.LinkByName(name + "p"); err == nil {
		_ = netlink.LinkSetUp(p)
	}
}

var subnetSeq struct {
	sync.Mutex
	n int
}

// restoreSysctls puts host sysctls the daemon turns on (forwarding) back
// as they were when t ends. Registered first, it runs after every other
// cleanup, when the daemon is gone.
func restoreSysctls(t testing.TB, paths ...string) {
	for _, p := range paths {
		old, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		t.Cleanup(func() { _ = os.WriteFile(p, old, 0o644) })
	}
}

var aptMu sync.Mutex

// ensureTool installs a Debian package when its command is missing (the
// tests ping with iputils' ping; the benchmark runs iperf3).
func ensureTool(t testing.TB, cmd, pkg string) {
	t.Helper()
	aptMu.Lock()
	defer aptMu.Unlock()
	if _, err := exec.LookPath(cmd); err == nil {
		return
	}
	install := func() error {
		c := exec.Command("apt-get", "install", "-y", "-q", "--no-install-recommends", pkg)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return c.Run()
	}
	if install() != nil {
		_ = exec.Command("apt-get", "update", "-q").Run()
		if err := install(); err != nil {
			t.Fatalf("%s is missing and installing %s failed: %v", cmd, pkg, err)
		}
	}
}

// newEnv starts Headscale and a daemon, with extraEnv added to the
// daemon's environment.
func newEnv(t testing.TB, extraEnv ...string) *env {
	t.Helper()
	return newEnvWith(t, envOptions{}, extraEnv...)
}

// envOptions are what some tests and benchmarks change in newEnv's world.
type envOptions struct {
	// defaultBatching starts Headscale with its own batching of node-store
	// writes and peer updates (what users run; the benchmark's default)
	// instead of the shortened one that keeps tests fast.
	defaultBatching bool
	// policy is Headscale's initial policy; headscaletest.OpenPolicy when
	// empty.
	policy string
}

// newEnvWith is newEnv with opts.
func newEnvWith(t testing.TB, opts envOptions, extraEnv ...string) *env {
	t.Helper()
	testkit.Root(t)
	ensureTool(t, "ping", "iputils-ping")
	restoreSysctls(t, "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
	headscaletest.OfflineClean()
	e := &env{t: t, id: randHex(3), bins: binaries(t), dir: t.TempDir(), extraEnv: extraEnv}
	subnetSeq.Lock()
	subnetSeq.n++
	n := subnetSeq.n
	subnetSeq.Unlock()
	b := 100 + (os.Getpid()+n*7)%100
	hsAddr := fmt.Sprintf("10.250.%d.1", b)
	hostVeth(t, "tce"+e.id, hsAddr+"/30")
	// Pods route only this /30 (Headscale's) through the bridge, for the
	// stock tailscaled the benchmark runs in pod namespaces; nothing else.
	e.hsNet = fmt.Sprintf("10.250.%d.0/30", b)
	e.hs = headscaletest.Start(t, headscaletest.Options{ListenAddr: hsAddr, DefaultBatching: opts.defaultBatching, Policy: opts.policy})
	cp, err := controlplane.New(logger.Discard, controlplane.Config{HeadscaleURL: e.hs.URL, HeadscaleAPIKey: controlplane.Secret(e.hs.APIKey)})
	if err != nil {
		t.Fatal(err)
	}
	e.cp = cp
	e.socket = filepath.Join(e.dir, "run", "daemon.sock")
	e.bridge = "tcb" + e.id
	e.subnet = fmt.Sprintf("10.251.%d.0/24", b)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(e.bridge); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{e.bins}, filepath.Join(e.dir, "cache"), nil)
	e.conf = e.confList(fmt.Sprintf(`{"type":"tailscale-cni","daemonSocket":%q}`, e.socket))
	e.metrics = testkit.FreeAddr(t)
	t.Cleanup(e.cleanup)
	e.startDaemon()
	return e
}

// confList is the test's conflist: bridge, then ours (a plugin entry).
// Without ours it is the bridge alone, on the same network and IPAM pool.
func (e *env) confList(ours string) *libcni.NetworkConfigList {
	if ours != "" {
		ours = ",\n    " + ours
	}
	raw := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "tscni-e2e-%s",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q,
              "routes": [{"dst": %q}]}}%s
  ]
}`, e.id, e.bridge, e.subnet, filepath.Join(e.dir, "ipam"), e.hsNet, ours)
	c, err := libcni.ConfListFromBytes([]byte(raw))
	if err != nil {
		e.t.Fatalf("conflist: %v", err)
	}
	return c
}

// daemonEnv is the daemon's environment: the control plane and its dirs.
func (e *env) daemonEnv() []string {
	env := append(append(os.Environ(), e.hs.Env()...),
		"CLUSTER_NAME=e2e"+e.id,
		"TS_CNI_STATE_DIR="+filepath.Join(e.dir, "state"),
		"TS_CNI_RUN_DIR="+filepath.Join(e.dir, "run"),
		"TS_CNI_SOCKET="+e.socket,
		"TS_CNI_METRICS_ADDR="+e.metrics,
	)
	return append(env, e.extraEnv...)
}

func (e *env) startDaemon() { e.startDaemonWaiting("reachable; ready") }

// startDaemonNoReady starts the daemon without waiting for the control
// plane, for tests that stopped it.
func (e *env) startDaemonNoReady() { e.startDaemonWaiting("not ready") }

func (e *env) startDaemonWaiting(readyMark string) {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.daemonLog = &testkit.Buffer{}
	e.daemon = e.launchDaemon(e.t, e.daemonEnv(), e.daemonLog)
	waitDaemon(e.t, e.daemon, readyMark, 90*time.Second)
}

// launchDaemon starts a daemon with env, its output also written to log
// unless nil. The caller stops it.
func (e *env) launchDaemon(t testing.TB, env []string, log *testkit.Buffer) *testkit.Process {
	t.Helper()
	cmd := exec.Command(filepath.Join(e.bins, "tailscale-cni-daemon"))
	cmd.Env = env
	if log != nil {
		cmd.Stdout, cmd.Stderr = log, log
	}
	d, err := testkit.Launch(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// waitDaemon waits until d serves and says readyMark ("reachable; ready"
// once the control plane is verified and recovery done, "not ready"
// without a control plane).
func waitDaemon(t testing.TB, d *testkit.Process, readyMark string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, mark := range []string{"tailscale-cni-daemon: serving ", readyMark} {
		if err := d.WaitFor(ctx, mark); err != nil {
			t.Fatal(err)
		}
	}
}

// stopDaemon stops the daemon: SIGTERM, or SIGKILL when kill.
func (e *env) stopDaemon(kill bool) {
	e.mu.Lock()
	d := e.daemon
	e.daemon = nil
	e.mu.Unlock()
	switch {
	case d == nil:
	case kill:
		d.Kill()
	default:
		_ = d.Stop(30 * time.Second)
	}
}

// cleanup stops the daemon and removes, by their derived names, whatever
// the test's containers may have left, then the namespaces.
func (e *env) cleanup() {
	e.stopDaemon(false)
	// TSCNI_E2E_DAEMON_LOG keeps the daemon's log for a look afterwards.
	if path := os.Getenv("TSCNI_E2E_DAEMON_LOG"); path != "" && e.daemonLog != nil {
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			_, _ = f.WriteString(e.daemonLog.String())
			f.Close()
		}
	}
	if e.t.Failed() && e.daemonLog != nil {
		log := e.daemonLog.String()
		if len(log) > 20000 {
			log = "...\n" + log[len(log)-20000:]
		}
		e.t.Logf("daemon log:\n%s", log)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range e.containers {
		_ = podnet.Teardown(podnet.PodFor(id, "", -1))
	}
	for _, n := range e.netnses {
		_ = exec.Command("ip", "netns", "del", n).Run()
	}
}

// pod is one sandbox: a netns and a container ID.
type pod struct {
	name, ns, netns, id string
	result              *current.Result
}

func (e *env) newPod(name string) *pod {
	e.t.Helper()
	p := &pod{name: name, ns: "e2e", netns: "tscni-" + e.id + "-" + name, id: "e2e" + e.id + randHex(8)}
	if out, err := exec.Command("ip", "netns", "add", p.netns).CombinedOutput(); err != nil {
		e.t.Fatalf("ip netns add %s: %v: %s", p.netns, err, out)
	}
	e.mu.Lock()
	e.netnses = append(e.netnses, p.netns)
	e.containers = append(e.containers, p.id)
	e.mu.Unlock()
	_ = exec.Command("ip", "netns", "exec", p.netns, "ip", "link", "set", "lo", "up").Run()
	return p
}

func (p *pod) path() string { return "/var/run/netns/" + p.netns }

func (e *env) rt(p *pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.id,
		NetNS:       p.path(),
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.ns},
			{"K8S_POD_NAME", p.name},
			{"K8S_POD_UID", "uid-" + p.id},
		},
	}
}

func (e *env) add(ctx context.Context, p *pod) (*current.Result, error) {
	r, err := e.cni.AddNetworkList(ctx, e.conf, e.rt(p))
	if err != nil {
		return nil, err
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, err
	}
	p.result = res
	return res, nil
}

func (e *env) del(ctx context.Context, p *pod) error {
	return e.cni.DelNetworkList(ctx, e.conf, e.rt(p))
}

// check runs CHECK for tailscale-cni through libcni with the result the
// list's ADD cached, as the last plugin of the list sees it. Not the whole
// list: the reference bridge and ptp plugins' CHECK insists that every IP of
// the final result sits on CNI_IFNAME (eth0), so any chained plugin that adds
// an interface with addresses fails their CHECK (containerd does not run
// CHECK; that is upstream's limitation).
func (e *env) check(ctx context.Context, p *pod) error {
	c, err := libcni.NetworkPluginConfFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"tailscale-cni","daemonSocket":%q}`, e.conf.Name, e.socket)))
	if err != nil {
		return err
	}
	return e.cni.CheckNetwork(ctx, c, e.rt(p))
}

// tailnetIPv4 returns the pod's tailnet IPv4 from its ADD result.
func (p *pod) tailnetIPv4(t testing.TB) net.IP {
	t.Helper()
	if p.result == nil {
		t.Fatalf("pod %s has no result", p.name)
	}
	for _, ip := range p.result.IPs {
		if ip.Interface != nil && p.result.Interfaces[*ip.Interface].Name == "ts0" && ip.Address.IP.To4() != nil {
			return ip.Address.IP.To4()
		}
	}
	t.Fatalf("pod %s: no ts0 IPv4 in result %s", p.name, mustJSON(p.result))
	return nil
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
