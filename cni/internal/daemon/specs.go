// Package daemon is the node daemon behind the tailscale-cni shim: it keeps
// one tailnet node per pod (see podbackend), wires it into the pod (see
// podnet), persists what it needs to recover after a restart, and serves the
// shim's gRPC service, Prometheus metrics and a health endpoint.
package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/proto/contract"
)

// Defaults of the daemon's configuration. The default tag is
// contract.TagPod.
const (
	DefaultClusterName = "k8s"
	DefaultAuthKeyTTL  = 5 * time.Minute
	DefaultStateDir    = "/var/lib/tailscale-cni"
	DefaultRunDir      = "/var/run/tailscale-cni"
	DefaultSocket      = DefaultRunDir + "/daemon.sock"
	DefaultAddTimeout  = 60 * time.Second
	DefaultPublishWait = 2 * time.Second
	// DefaultPoolSize is off: a bare daemon (the tests, the demo) makes
	// no node before a pod asks. The chart sets its own (pool.size).
	DefaultPoolSize = 0
)

// Config is the daemon's configuration.
type Config struct {
	ClusterName string
	Tags        []string
	AuthKeyTTL  time.Duration
	// Ephemeral registers pods as ephemeral nodes, so that the control
	// plane removes nodes a vanished node left behind on its own.
	Ephemeral bool
	StateDir  string // pod state lives in StateDir/pods/<container ID>
	RunDir    string // pod sockets live in RunDir/pods/<namespace>_<pod>
	// AddTimeout bounds how long ADD waits for a node to run.
	AddTimeout time.Duration
	// AddWaitsForRunning makes ADD wait until the node is Running (has a
	// home DERP), not only registered with its addresses.
	AddWaitsForRunning bool
	// PublishWait bounds how long ADD waits, once the node has its
	// addresses, for the control plane to hold its endpoints and home DERP
	// (see podbackend.Backend.WaitPublished); 0 is DefaultPublishWait, and
	// a negative value does not wait.
	PublishWait time.Duration
	// BackendLogf receives the pods' backends' logs; the daemon's own
	// logger when nil. The daemon passes a rate-limited one.
	BackendLogf logger.Logf `json:"-"`
	// IPv6 gives pods their tailnet IPv6 address too (and turns on IPv6
	// forwarding).
	IPv6 bool
	// PoolSize is how many nodes the daemon keeps registered and running
	// ahead of pods with its default tags, so that their ADD only wires
	// them (see pool.go); 0 turns the pool off.
	PoolSize int
	// PoolTuning is how the pool follows bursts of ADDs (pool_grow.go).
	PoolTuning PoolTuning
	// Netstack gives every pod's node a netstack serving 100.100.100.100
	// through ts0, as tailscaled does: the alternative to the daemon's own
	// DNS service, kept to measure its cost (TS_CNI_DEBUG_NETSTACK).
	Netstack bool
}

// WithDefaults fills in zero fields.
func (c Config) WithDefaults() Config {
	if c.ClusterName == "" {
		c.ClusterName = DefaultClusterName
	}
	if len(c.Tags) == 0 {
		c.Tags = []string{contract.TagPod}
	}
	if c.AuthKeyTTL == 0 {
		c.AuthKeyTTL = DefaultAuthKeyTTL
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.RunDir == "" {
		c.RunDir = DefaultRunDir
	}
	if c.PublishWait == 0 {
		c.PublishWait = DefaultPublishWait
	}
	if c.AddTimeout == 0 {
		c.AddTimeout = DefaultAddTimeout
	}
	return c
}

// ParseTags parses TS_TAGS: comma-separated tags, each "tag:<name>".
func ParseTags(s string) ([]string, error) {
	var tags []string
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		name, ok := strings.CutPrefix(t, "tag:")
		if !ok || !tagName.MatchString(name) {
			return nil, fmt.Errorf("TS_TAGS: %q is not a tag (want tag:<letters, digits, dashes>)", t)
		}
		tags = append(tags, t)
	}
	if len(tags) == 0 {
		return nil, fmt.Errorf("TS_TAGS: no tags in %q", s)
	}
	return tags, nil
}

var tagName = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]*$`)

// containerIDRe is what the CNI spec allows in a container ID.
var containerIDRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// ValidContainerID reports whether id is a CNI container ID that is safe to
// use as a directory name.
func ValidContainerID(id string) error {
	if id == "" {
		return fmt.Errorf("container ID is empty")
	}
	if len(id) > 256 || !containerIDRe.MatchString(id) {
		return fmt.Errorf("container ID %q has characters outside [a-zA-Z0-9_.-] or is too long", id)
	}
	return nil
}

// k8sName is the charset Kubernetes allows in namespace and pod names, and
// so in the socket directory name.
var k8sName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.\-]*[a-z0-9])?$`)

// Hostname is the pod's tailnet hostname: {cluster}-{namespace}-{pod}, made
// a DNS label (lower case, [a-z0-9-], at most 63 characters). Long names keep
// their start and get a hash of the whole name so they stay unique. Without
// Kubernetes names the container ID stands in.
func Hostname(cluster, namespace, pod, containerID string) string {
	full := cluster + "-" + namespace + "-" + pod
	if namespace == "" && pod == "" {
		full = cluster + "-" + shortID(containerID)
	}
	label := dnsLabel(full)
	if len(label) <= 63 && label == strings.ToLower(full) {
		return label
	}
	sum := sha256.Sum256([]byte(full))
	suffix := "-" + hex.EncodeToString(sum[:])[:8]
	if len(label) > 63-len(suffix) {
		label = strings.TrimRight(label[:63-len(suffix)], "-")
	}
	return label + suffix
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func dnsLabel(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		if !ok {
			if !dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = true
			continue
		}
		b.WriteRune(r)
		dash = false
	}
	out := strings.Trim(b.String(), "-")
	if out == "" {
		out = "pod"
	}
	return out
}

// SocketPath is the pod's LocalAPI socket:
// RunDir/pods/<namespace>_<pod>/tailscaled.sock, or the container ID when
// the runtime gave no Kubernetes names.
func SocketPath(runDir, namespace, pod, containerID string) string {
	dir := namespace + "_" + pod
	if !k8sName.MatchString(namespace) || !k8sName.MatchString(pod) {
		dir = containerID
	}
	return filepath.Join(runDir, "pods", dir, "tailscaled.sock")
}

// PodDir is the pod's state dir.
func PodDir(stateDir, containerID string) string {
	return filepath.Join(stateDir, "pods", containerID)
}

// PodRecord is what the daemon persists about a pod (pod.json in its state
// dir), beside the node's own FileStore.
type PodRecord struct {
	ContainerID string         `json:"containerID"`
	NetNS       string         `json:"netns"`
	IfName      string         `json:"ifname,omitempty"`
	Network     string         `json:"network,omitempty"`
	Namespace   string         `json:"namespace,omitempty"`
	Pod         string         `json:"pod,omitempty"`
	PodUID      string         `json:"podUID,omitempty"`
	Table       int            `json:"table"`
	Hostname    string         `json:"hostname"`
	NodeID      string         `json:"nodeID,omitempty"`
	Addrs       []netip.Prefix `json:"addrs,omitempty"`
	Created     time.Time      `json:"created"`
	// Ready is set once ADD completed; a record without it is an ADD that
	// died half way.
	Ready bool `json:"ready"`
	// Deleting is set when DEL tore the pod down but could not delete its
	// node from the control plane: the record stays only so that the node
	// gets deleted later, and is never recovered.
	Deleting bool `json:"deleting,omitempty"`
	// OptOut: the pod's annotation tailscale.com/cni is "false". ADD made
	// nothing; the record is there so that CHECK knows, and GC and the
	// sweep treat the attachment like any other.
	OptOut bool `json:"optOut,omitempty"`
	// Tags are the pod's own tags (annotation tailscale.com/tags); the
	// daemon's when empty.
	Tags []string `json:"tags,omitempty"`
	// DNSAddrs are the addresses the daemon put on the pod's lo to serve
	// its DNS (see DNSService), so that a daemon started without them
	// takes them away.
	DNSAddrs []netip.Addr `json:"dnsAddrs,omitempty"`
	// PoolID, NodeDir, HostVeth and TUN are set for a pod whose node came
	// from the daemon's pool: its node's state dir and link names derive
	// from the pool entry's ID, not from the container ID. Records
	// without them (every pod of older daemons, and pods of the slow
	// path) derive both from the container ID.
	PoolID   string `json:"poolID,omitempty"`
	NodeDir  string `json:"nodeDir,omitempty"`
	HostVeth string `json:"hostVeth,omitempty"`
	TUN      string `json:"tun,omitempty"`
}

// nodeDir is the state dir of the pod's node (its FileStore).
func (r *PodRecord) nodeDir(stateDir string) string {
	if r.NodeDir != "" {
		return r.NodeDir
	}
	return PodDir(stateDir, r.ContainerID)
}

// RecordFile is PodRecord's name in the pod's state dir.
const RecordFile = "pod.json"
