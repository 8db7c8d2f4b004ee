package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// The start phases, in the order StartIn runs them.

// writePKI issues every certificate and kubeconfig the node uses.
func (c *Cluster) writePKI(context.Context, Options) error {
	ports, err := testkit.FreePorts(c.NodeIP, 1)
	if err != nil {
		return err
	}
	c.APIServer = "https://" + net.JoinHostPort(c.NodeIP, strconv.Itoa(ports[0]))
	p, err := newPKI(c.path("pki"))
	if err != nil {
		return err
	}
	nodeIP := net.ParseIP(c.NodeIP)
	if err := p.issue("apiserver", "kube-apiserver", nil,
		[]net.IP{nodeIP, net.ParseIP(apiServiceIP), net.ParseIP("127.0.0.1")},
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}); err != nil {
		return err
	}
	if err := p.issue("kubelet-serving", "system:node:"+c.NodeName, []string{"system:nodes"}, []net.IP{nodeIP}, []string{c.NodeName}); err != nil {
		return err
	}
	ids := append(identities, struct{ name, cn, org string }{"kubelet", "system:node:" + c.NodeName, "system:nodes"})
	for _, id := range ids {
		var orgs []string
		if id.org != "" {
			orgs = []string{id.org}
		}
		if err := p.issue(id.name, id.cn, orgs, nil, nil); err != nil {
			return err
		}
		if id.name == "apiserver-kubelet-client" {
			continue
		}
		path, err := p.kubeconfig(id.name, c.APIServer)
		if err != nil {
			return err
		}
		if id.name == "admin" {
			c.Kubeconfig = path
		}
	}
	return p.serviceAccountKey()
}

// startHeadscale runs Headscale on the node's address, where pods, the
// node's daemons and the tests' own tsnet nodes all reach it.
func (c *Cluster) startHeadscale(ctx context.Context, opts Options) error {
	hs, err := headscaletest.StartIn(ctx, c.path("headscale"), headscaletest.Options{
		ListenAddr: c.NodeIP,
		Policy:     opts.HeadscalePolicy,
		Binary:     c.bin["headscale"],
	})
	if err != nil {
		return err
	}
	c.Headscale = hs
	return nil
}

func (c *Cluster) startEtcd(ctx context.Context, _ Options) error {
	ports, err := testkit.FreePorts("127.0.0.1", 2)
	if err != nil {
		return err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	c.etcdURL = client
	if err := c.launch("etcd",
		"--name=node", "--data-dir="+c.path("etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=node="+peer,
		// A throwaway cluster: its data need not survive a power cut.
		"--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return err
	}
	return c.waitUntil(ctx, "etcd", httpOK(client+"/health", nil))
}

func (c *Cluster) startAPIServer(ctx context.Context, _ Options) error {
	pki := func(n string) string { return c.path("pki", n) }
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(c.APIServer, "https://"))
	if err := c.launch("kube-apiserver",
		"--etcd-servers="+c.etcdURL,
		"--bind-address="+c.NodeIP, "--advertise-address="+c.NodeIP, "--secure-port="+port,
		"--tls-cert-file="+pki("apiserver.crt"), "--tls-private-key-file="+pki("apiserver.key"),
		"--client-ca-file="+pki("ca.crt"),
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki("sa.pub"),
		"--service-account-signing-key-file="+pki("sa.key"),
		"--service-cluster-ip-range="+serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--profiling=false"); err != nil {
		return err
	}
	return c.waitUntil(ctx, "kube-apiserver", func(ctx context.Context) error {
		_, err := c.Kubectl(ctx, "get", "--raw", "/readyz")
		return err
	})
}

// startControllers runs the controller-manager (ReplicaSets, DaemonSets,
// StatefulSets, service accounts, garbage collection, ...) and the
// scheduler. Their servers are off: nothing here scrapes them.
func (c *Cluster) startControllers(ctx context.Context, _ Options) error {
	pki := func(n string) string { return c.path("pki", n) }
	if err := c.launch("kube-controller-manager",
		"--kubeconfig="+pki("controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+pki("controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+pki("controller-manager.kubeconfig"),
		"--service-account-private-key-file="+pki("sa.key"),
		"--root-ca-file="+pki("ca.crt"),
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range="+serviceCIDR,
		"--cluster-name=tsymbiote",
		"--leader-elect=false", "--secure-port=0"); err != nil {
		return err
	}
	if err := c.launch("kube-scheduler",
		"--kubeconfig="+pki("scheduler.kubeconfig"),
		"--authentication-kubeconfig="+pki("scheduler.kubeconfig"),
		"--authorization-kubeconfig="+pki("scheduler.kubeconfig"),
		"--leader-elect=false", "--secure-port=0"); err != nil {
		return err
	}
	// Pods can be created once the default service account exists.
	return c.waitUntil(ctx, "kube-controller-manager", func(ctx context.Context) error {
		_, err := c.Kubectl(ctx, "get", "serviceaccount", "default", "-n", "default")
		return err
	})
}

// startContainerd writes the primary CNI network and runs containerd with
// the CRI plugin on it.
func (c *Cluster) startContainerd(ctx context.Context, _ Options) error {
	for _, d := range []string{cniBinDir, cniConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if err := copyFile(c.bin["cni-"+p], filepath.Join(cniBinDir, p), 0o755); err != nil {
			return err
		}
	}
	conf, err := bridgeConflist(c.path("cni-ipam"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cniConfDir, PrimaryConflist), conf, 0o644); err != nil {
		return err
	}
	c.ContainerdSocket = c.path("containerd", "containerd.sock")
	cfg := c.path("containerd", "config.toml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(cfg, []byte(containerdConfig(c.path("containerd"), c.ContainerdSocket, "overlayfs", cniBinDir, cniConfDir)), 0o644); err != nil {
		return err
	}
	if err := c.launch("containerd", "--config", cfg); err != nil {
		return err
	}
	return c.waitUntil(ctx, "containerd", func(ctx context.Context) error {
		_, err := c.Ctr(ctx, "version")
		return err
	})
}

// importImages imports the image tarballs, unpacked for the CRI's
// snapshotter, so that pods start without a registry.
func (c *Cluster) importImages(ctx context.Context, opts Options) error {
	// In parallel: each import mostly waits on unpacking layers to disk.
	errs := make([]error, len(opts.Images))
	var wg sync.WaitGroup
	for i, img := range opts.Images {
		wg.Go(func() {
			_, errs[i] = c.Ctr(ctx, "images", "import", "--snapshotter", "overlayfs", img)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) startKubelet(ctx context.Context, _ Options) error {
	pki := func(n string) string { return c.path("pki", n) }
	ports, err := testkit.FreePorts("127.0.0.1", 5)
	if err != nil {
		return err
	}
	kubeletPort, healthz := ports[0], ports[1]
	cfg := c.path("kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(kubeletConfig(c.NodeIP, pki("ca.crt"), pki("kubelet-serving.crt"), pki("kubelet-serving.key"),
		c.ContainerdSocket, c.path("pod-logs"), kubeletPort, healthz)), 0o644); err != nil {
		return err
	}
	if err := c.launch("kubelet",
		"--config="+cfg,
		"--kubeconfig="+pki("kubelet.kubeconfig"),
		"--root-dir="+c.path("kubelet"),
		"--hostname-override="+c.NodeName,
		"--node-ip="+c.NodeIP,
		"--v=1"); err != nil {
		return err
	}
	proxyCfg := c.path("kube-proxy.yaml")
	if err := os.WriteFile(proxyCfg, []byte(kubeProxyConfig(pki("kube-proxy.kubeconfig"), c.NodeName, c.NodeIP, ports[2], ports[3])), 0o644); err != nil {
		return err
	}
	if err := c.launch("kube-proxy", "--config="+proxyCfg); err != nil {
		return err
	}
	return c.waitUntil(ctx, "kubelet", httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz), nil))
}

// waitNodeReady waits for the node to report Ready (which needs the CNI
// network) and for kube-proxy to have programmed the API server's service.
func (c *Cluster) waitNodeReady(ctx context.Context, _ Options) error {
	return c.waitUntil(ctx, "kubelet", func(ctx context.Context) error {
		out, err := c.Kubectl(ctx, "get", "node", c.NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "True" {
			return fmt.Errorf("node Ready is %q", out)
		}
		return nil
	})
}
