package cluster

import (
	"encoding/json"
	"fmt"
)

// Addresses of the cluster's networks. They are private ranges the usual
// defaults use (kubeadm's service range, flannel's pod range); Options can
// move the node's own address when it collides with the host.
const (
	podCIDR     = "10.244.0.0/24"
	serviceCIDR = "10.96.0.0/16"
	// The first service address is the API server's (kubernetes.default).
	apiServiceIP = "10.96.0.1"
	// bridgeName is the primary CNI's bridge; the harness deletes it.
	bridgeName = "tsymcni0"
	// NetworkName is the primary CNI network, the "cluster CNI" that
	// tailscale-cni chains after.
	NetworkName = "tsymbiote-cluster"
)

// containerdConfig runs containerd's CRI with everything of its own under
// dir, the CNI directories the node uses, and what this kind of host
// needs: root without CAP_SYS_RESOURCE cannot lower its children's OOM
// score adjustment (restrict_oom_score_adj), and the pause image is the
// one imported offline rather than pulled.
func containerdConfig(dir, sock, snapshotter, cniBin, cniConf string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %q
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`, dir+"/root", dir+"/state", sock, PauseImage, snapshotter, cniBin, cniConf)
}

// PauseImage is the sandbox image containerd runs for every pod; the
// harness imports it with the others (hack/images builds it).
const PauseImage = "registry.k8s.io/pause:3.10"

// kubeletConfig is the kubelet's configuration file. Cgroups here are v1,
// which kubelet 1.34 refuses unless told otherwise; the cgroupfs driver
// because there is no systemd; no QoS cgroups, so that a pod's containers
// sit in cgroups the harness can find and remove; eviction thresholds low
// enough that a busy disk does not evict the tests' pods.
func kubeletConfig(nodeIP, caFile, certFile, keyFile, runtimeSock, podLogs string, port, healthzPort int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
podLogsDir: %s
clusterDomain: %s
clusterDNS: [%s]
resolvConf: /etc/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
maxPods: 110
staticPodPath: ""
`, nodeIP, port, healthzPort, certFile, keyFile, caFile, runtimeSock, podLogs, ClusterDomain, ClusterDNSIP)
}

// kubeProxyConfig runs kube-proxy in iptables mode, the default and what
// most clusters still run. It leaves the conntrack sysctls and
// route_localnet alone (limits of 0 mean "as they are"; no localhost
// NodePorts), so that the host's settings need no restoring.
func kubeProxyConfig(kubeconfig, nodeName, nodeIP string, healthzPort, metricsPort int) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %s}
mode: iptables
clusterCIDR: %s
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:%d
metricsBindAddress: 127.0.0.1:%d
nodePortAddresses: ["%s/32"]
iptables: {localhostNodePorts: false}
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, kubeconfig, podCIDR, nodeName, nodeIP, healthzPort, metricsPort, nodeIP)
}

// bridgeConflist is the node's primary network: the reference bridge and
// host-local plugins, as a cluster's own CNI would write it. host-local's
// leases live under the harness's directory.
func bridgeConflist(ipamDir string) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       NetworkName,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      bridgeName,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": ipamDir,
					"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}
