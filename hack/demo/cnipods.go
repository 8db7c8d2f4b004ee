package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"tsymbiote.dhouti.dev/testkit"
)

// The CNI part of the demo (root only): a tailscale-cni daemon, network
// namespaces standing in for pods, each given its network the way containerd
// does it (libcni running ptp then tailscale-cni), and an adapter on each
// pod's LocalAPI socket. Pod traffic stays inside the demo's namespaces and
// their veths: ptp routes only the pods' own /24.

const (
	ipv4Forward = "/proc/sys/net/ipv4/ip_forward"
	ipv6Forward = "/proc/sys/net/ipv6/conf/all/forwarding"

	demoPodNamespace = "default"
	demoPodSubnet    = "10.252.77.0/24" // ptp's host-local pool for the pods' eth0
)

// cniPods is what the CNI part made, for teardown.
type cniPods struct {
	logf    func(string, ...any)
	dir     string
	socket  string
	cni     *libcni.CNIConfig
	conf    *libcni.NetworkConfigList
	daemon  *testkit.Process
	pods    []*demoPod
	sysctls map[string][]byte
}

type demoPod struct {
	name, netns, id string
	socket          string // the pod's LocalAPI, served by the daemon
	addrs           []string
}

// startCNIPods starts the daemon and n pods. On error, the caller's teardown
// (c.stop) still removes whatever was made.
func startCNIPods(ctx context.Context, logf func(string, ...any), c *cniPods, bin, dir string, n int, hsEnv []string) error {
	c.logf, c.dir = logf, dir
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	c.sysctls = map[string][]byte{}
	// The daemon turns forwarding on; the demo puts it back as it was.
	for _, p := range []string{ipv4Forward, ipv6Forward} {
		if old, err := os.ReadFile(p); err == nil {
			c.sysctls[p] = old
		}
	}
	binDir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	if err := saveSysctls(dir, c.sysctls); err != nil {
		return err
	}
	// One CNI bin dir, named by plugin type, as kubelet's /opt/cni/bin.
	for typ, file := range map[string]string{"ptp": "cni-ptp", "host-local": "cni-host-local", "tailscale-cni": "tailscale-cni"} {
		src := filepath.Join(bin, file)
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("%s not built: run `make demo`, which builds it", src)
		}
		if err := os.Symlink(src, filepath.Join(binDir, typ)); err != nil {
			return err
		}
	}
	ports, err := testkit.FreePorts("127.0.0.1", 1)
	if err != nil {
		return err
	}
	metrics := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	c.socket = filepath.Join(dir, "run", "daemon.sock")
	env := append([]string{
		"CLUSTER_NAME=demo",
		"TS_CNI_STATE_DIR=" + filepath.Join(dir, "state"),
		"TS_CNI_RUN_DIR=" + filepath.Join(dir, "run"),
		"TS_CNI_SOCKET=" + c.socket,
		"TS_CNI_METRICS_ADDR=" + metrics,
	}, hsEnv...)
	logf("demo: starting tailscale-cni-daemon (metrics on http://%s/metrics)", metrics)
	if c.daemon, err = launch("tailscale-cni-daemon", filepath.Join(dir, "daemon"), env, filepath.Join(bin, "tailscale-cni-daemon")); err != nil {
		return err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := c.daemon.WaitFor(readyCtx, "reachable; ready"); err != nil {
		return err
	}

	c.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cache"), nil)
	c.conf, err = libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "tsymbiote-demo",
  "plugins": [
    {"type": "ptp", "ipMasq": false, "mtu": 1500,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q}},
    {"type": "tailscale-cni", "daemonSocket": %q}
  ]
}`, demoPodSubnet, filepath.Join(dir, "ipam"), c.socket)))
	if err != nil {
		return fmt.Errorf("demo conflist: %w", err)
	}
	for i := 1; i <= n; i++ {
		p := &demoPod{name: fmt.Sprintf("pod-%d", i), netns: podNetns(os.Getpid(), i)}
		p.id = strings.ReplaceAll(p.netns, "-", "")
		if out, err := exec.Command("ip", "netns", "add", p.netns).CombinedOutput(); err != nil {
			return fmt.Errorf("ip netns add %s: %w: %s", p.netns, err, out)
		}
		c.pods = append(c.pods, p)
		_ = exec.Command("ip", "netns", "exec", p.netns, "ip", "link", "set", "lo", "up").Run()
		addCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		r, err := c.cni.AddNetworkList(addCtx, c.conf, c.runtimeConf(p))
		cancel()
		if err != nil {
			return fmt.Errorf("CNI ADD of %s: %w", p.name, err)
		}
		res, err := current.NewResultFromResult(r)
		if err != nil {
			return fmt.Errorf("CNI ADD of %s: %w", p.name, err)
		}
		for _, ip := range res.IPs {
			if ip.Interface != nil && res.Interfaces[*ip.Interface].Name == "ts0" {
				p.addrs = append(p.addrs, ip.Address.IP.String())
			}
		}
		p.socket = filepath.Join(dir, "run", "pods", demoPodNamespace+"_"+p.name, "tailscaled.sock")
		logf("demo: pod %s (netns %s) has ts0 %s; its LocalAPI is %s", p.name, p.netns, strings.Join(p.addrs, ", "), p.socket)
	}
	return nil
}

func (c *cniPods) runtimeConf(p *demoPod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.id,
		NetNS:       "/var/run/netns/" + p.netns,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", demoPodNamespace},
			{"K8S_POD_NAME", p.name},
			{"K8S_POD_UID", "uid-" + p.id},
		},
	}
}

// stop deletes every pod through CNI DEL (which removes its node from
// Headscale and its links, rules and state), stops the daemon, removes the
// namespaces and restores the sysctls.
func (c *cniPods) stop() {
	for _, p := range c.pods {
		if c.cni != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := c.cni.DelNetworkList(ctx, c.conf, c.runtimeConf(p)); err != nil {
				c.logf("demo: CNI DEL of %s: %v", p.name, err)
			}
			cancel()
		}
		if out, err := exec.Command("ip", "netns", "del", p.netns).CombinedOutput(); err != nil {
			c.logf("demo: ip netns del %s: %v: %s", p.netns, err, out)
		}
	}
	if c.daemon != nil {
		_ = c.daemon.Stop(testkit.StopGrace)
	}
	for p, old := range c.sysctls {
		_ = os.WriteFile(p, old, 0o644)
	}
}

// cniPodsWanted says whether the demo can run pods: root, and not turned off.
func cniPodsWanted(n int) (bool, error) {
	if n == 0 {
		return false, nil
	}
	if os.Geteuid() != 0 {
		return false, errors.New("not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return false, errors.New("iproute2's ip is missing")
	}
	pid, err := otherCNIDaemon()
	if err != nil {
		return false, err
	}
	if pid != 0 {
		return false, fmt.Errorf("another tailscale-cni-daemon runs here (pid %d), and the demo's would sweep its pods' links and rules", pid)
	}
	return true, nil
}
