package daemon

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"tsymbiote.dhouti.dev/cni/internal/poddns"

	"tailscale.com/ipn"
	"tailscale.com/net/netmon"
	"tailscale.com/tstime"
	"tailscale.com/types/logger"
	"tailscale.com/util/eventbus"
	"tsymbiote.dhouti.dev/cni/internal/podbackend"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
	"tsymbiote.dhouti.dev/controlplane"
)

// ControlPlane is the part of controlplane.Client the Manager uses: a key
// per pod to register with, and the pod's node deleted when it goes.
type ControlPlane interface {
	ControlURL() string
	CreateAuthKey(ctx context.Context, req controlplane.AuthKeyRequest) (*controlplane.AuthKey, error)
	DeleteDevice(ctx context.Context, id string) error
}

// deviceLister is the part of controlplane.Client that finds a pool node
// the daemon died before learning the ID of (see recoverPool).
type deviceLister interface {
	ListDevices(ctx context.Context, opts controlplane.ListOptions) ([]controlplane.Device, error)
}

var _ ControlPlane = controlplane.Client(nil)

// PodNetwork is the kernel work of a pod's attachment: host rules and
// table, the ts0 veth, the sweep of leftovers. podnet.Host is the real one;
// it must be safe for concurrent use, since pods are added in parallel.
type PodNetwork interface {
	CheckNetNS(path string) error
	EnableForwarding(want6 bool) error
	PrepareHost(podnet.Pod) error
	AttachPod(logf logger.Logf, p podnet.Pod, addrs []netip.Prefix) ([]netip.Prefix, error)
	PodMAC(podnet.Pod) (string, error)
	Check(p podnet.Pod, addrs []netip.Prefix) error
	Teardown(podnet.Pod) error
	Sweep(logf logger.Logf, keepLink func(string) bool, keepTable func(int) bool) (int, error)
}

var _ PodNetwork = podnet.Host{}

// PodBackend is one pod's running node: *podbackend.Backend.
type PodBackend interface {
	WaitAddresses(context.Context) (*podbackend.Running, error)
	WaitRunning(context.Context) (*podbackend.Running, error)
	WaitPublished(ctx context.Context, limit time.Duration) bool
	State() ipn.State
	Relay(netmon.ChangeDelta)
	// ServeSocket serves the node's LocalAPI at a pod's socket: a pool
	// node, started without one, gets it when a pod takes it.
	ServeSocket(path string) error
	// SetHostname renames the node (a pool node, to its pod's name).
	SetHostname(name string) error
	// ControlName is the node's name as the control plane last sent it.
	ControlName() string
	Close()
}

var _ PodBackend = (*podbackend.Backend)(nil)

// StartBackendFunc starts a pod's node; StartPodBackend is the real one.
type StartBackendFunc func(logger.Logf, podbackend.Config) (PodBackend, error)

// StartPodBackend is podbackend.Start as a StartBackendFunc.
func StartPodBackend(logf logger.Logf, cfg podbackend.Config) (PodBackend, error) {
	b, err := podbackend.Start(logf, cfg)
	if err != nil {
		return nil, err // not a nil *Backend in a non-nil PodBackend
	}
	return b, nil
}

// Deps are what a Manager drives. The daemon's main passes the real ones;
// tests pass fakes, which is what lets the Manager's logic run without root
// or servers.
type Deps struct {
	ControlPlane ControlPlane
	Network      PodNetwork
	StartBackend StartBackendFunc
	// NewNetMon starts the monitor of the host network that every backend
	// shares, publishing on bus: netmon.New, or a static one in tests.
	NewNetMon func(bus *eventbus.Bus, logf logger.Logf) (*netmon.Monitor, error)
	// Clock drives RetryDeletes' ticks and Recover's wait; the real clock
	// when nil.
	Clock tstime.Clock
	// Metrics receives the operations' figures; new ones when nil.
	Metrics *Metrics
	// Pods reads pods' annotations (tailscale.com/tags, /hostname, /cni)
	// from the API server; every pod gets the defaults when nil.
	Pods PodSource
	// DNS serves MagicDNS in pods; pods keep only the cluster's DNS when
	// nil.
	DNS PodDNS
}

// PodSource is where pods' annotations come from: *podmeta.Client. An
// error wrapping podmeta.ErrNoPod means there is no such pod (defaults
// apply); any other error fails ADD with "try again later".
type PodSource interface {
	Annotations(ctx context.Context, namespace, name string) (map[string]string, error)
}

// PodDNS starts a pod's DNS service: the daemon's is DNSService.
type PodDNS interface {
	// Addrs are the addresses Start puts on pods' lo.
	Addrs() []netip.Addr
	Start(logf logger.Logf, netnsPath string, node poddns.Node, count poddns.Counter) (stop func(), err error)
}

func (d Deps) withDefaults() (Deps, error) {
	if d.ControlPlane == nil || d.Network == nil || d.StartBackend == nil || d.NewNetMon == nil {
		return d, errors.New("daemon: Deps needs ControlPlane, Network, StartBackend and NewNetMon")
	}
	if d.Clock == nil {
		d.Clock = tstime.StdClock{}
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics()
	}
	return d, nil
}
