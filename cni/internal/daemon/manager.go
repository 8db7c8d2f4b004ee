package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"tailscale.com/ipn"
	"tailscale.com/net/netmon"
	"tailscale.com/tstime"
	"tailscale.com/types/logger"
	"tailscale.com/util/eventbus"
	"tsymbiote.dhouti.dev/cni/internal/cnierr"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
)

// Attachment is one CNI attachment as the shim reports it.
type Attachment struct {
	ContainerID string
	NetNS       string
	IfName      string
	Network     string
	Namespace   string
	Pod         string
	PodUID      string
}

// Result is what ADD returns about the pod's tailnet interface.
type Result struct {
	Interface string
	MAC       string
	Sandbox   string
	Addrs     []netip.Prefix
	NodeID    string
	Hostname  string
}

// pod is one attachment the daemon manages.
type pod struct {
	rec     PodRecord
	backend PodBackend
	socket  string
	// stopDNS stops the pod's DNS service; nil without one.
	stopDNS func()
}

// Manager keeps the node's pods. ADD, DEL and CHECK may run concurrently:
// each holds its container's lock, and mu guards the maps.
type Manager struct {
	logf    logger.Logf
	cfg     Config
	cp      ControlPlane
	net     PodNetwork
	start   StartBackendFunc
	clock   tstime.Clock
	bus     *eventbus.Bus
	netMon  *netmon.Monitor
	metrics *Metrics
	busCli  *eventbus.Client
	podSrc  PodSource // nil: every pod gets the defaults
	dns     PodDNS    // nil: no MagicDNS in pods

	// closing ends when Close starts: recoveries still waiting for their
	// node give up, and recovering is how Close waits for them to.
	closing    context.Context
	stopAll    context.CancelFunc
	recovering sync.WaitGroup

	// pool holds the nodes registered ahead of pods (pool.go); its
	// entries are guarded by mu.
	pool pool

	mu    sync.Mutex
	pods  map[string]*pod        // by container ID
	locks map[string]*sync.Mutex // per container ID, held by ADD/DEL/CHECK
	ready error                  // nil when ADD can be served
}

// NewManager starts the shared network monitor. Call Recover before serving.
func NewManager(logf logger.Logf, cfg Config, deps Deps) (*Manager, error) {
	cfg = cfg.WithDefaults()
	deps, err := deps.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Manager{
		logf: logf, cfg: cfg, metrics: deps.Metrics,
		cp: deps.ControlPlane, net: deps.Network, start: deps.StartBackend, clock: deps.Clock,
		podSrc: deps.Pods, dns: deps.DNS,
		bus:   eventbus.New(),
		pods:  map[string]*pod{},
		locks: map[string]*sync.Mutex{},
	}
	m.closing, m.stopAll = context.WithCancel(context.Background())
	m.metrics.podsFunc = m.podStates
	m.initPool()
	for _, d := range []string{filepath.Join(cfg.StateDir, "pods"), filepath.Join(cfg.StateDir, poolDirName), filepath.Join(cfg.RunDir, "pods")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			m.bus.Close()
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	if err := m.net.EnableForwarding(cfg.IPv6); err != nil {
		m.bus.Close()
		return nil, err
	}
	// One monitor for every backend: each backend with its own would
	// re-read the whole host's interfaces and routes on every other pod's
	// change, and log about it.
	// The monitor logs every route change on the host, including each
	// pod's table gaining a route whenever a peer joins: it gets the
	// rate-limited logger the backends get.
	nmLogf := cfg.BackendLogf
	if nmLogf == nil {
		nmLogf = logf
	}
	nm, err := deps.NewNetMon(m.bus, logger.WithPrefix(nmLogf, "netmon: "))
	if err != nil {
		m.bus.Close()
		return nil, fmt.Errorf("starting network monitor: %w", err)
	}
	m.netMon = nm
	m.busCli = m.bus.Client("tailscale-cni.manager")
	eventbus.SubscribeFunc(m.busCli, m.relayChange)
	nm.Start()
	return m, nil
}

// relayChange forwards host network changes that can matter to a backend
// (new default route, addresses on the uplink): pods' own links carry no
// host addresses and never qualify, so pod churn stays silent.
func (m *Manager) relayChange(cd netmon.ChangeDelta) {
	if !cd.RebindLikelyRequired {
		return
	}
	m.mu.Lock()
	var bs []PodBackend
	for _, p := range m.pods {
		if p.backend != nil {
			bs = append(bs, p.backend)
		}
	}
	for _, e := range m.pool.entries {
		if e.backend != nil {
			bs = append(bs, e.backend)
		}
	}
	m.mu.Unlock()
	for _, b := range bs {
		b.Relay(cd)
	}
}

// Close shuts down every backend without deleting pods: their state stays
// for the next daemon to recover. The pool's nodes are deleted from the
// control plane (see closePool).
func (m *Manager) Close() {
	m.stopAll()
	m.recovering.Wait() // so that no recovery starts a backend after this
	m.closePool()
	m.mu.Lock()
	pods := m.pods
	m.pods = map[string]*pod{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range pods {
		if p.backend != nil {
			wg.Go(p.backend.Close)
		}
	}
	wg.Wait()
	m.busCli.Close()
	m.netMon.Close()
	m.bus.Close()
}

func (m *Manager) lock(id string) func() {
	m.mu.Lock()
	l, ok := m.locks[id]
	if !ok {
		l = new(sync.Mutex)
		m.locks[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// podByID returns the live pod of a container, or nil.
func (m *Manager) podByID(id string) *pod {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pods[id]
}

// SetReady records whether ADD can be served (nil) or why not.
func (m *Manager) SetReady(err error) {
	m.mu.Lock()
	m.ready = err
	m.mu.Unlock()
}

// Status reports readiness and the number of pods.
func (m *Manager) Status() (pods int, ready error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pods), m.ready
}

func (m *Manager) podStates() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for _, p := range m.pods {
		st := "starting"
		if p.rec.OptOut {
			st = "opted_out"
		} else if p.backend != nil {
			st = p.backend.State().String()
		}
		out[st]++
	}
	return out
}

func (m *Manager) validateAttachment(a Attachment, needNetNS bool) error {
	if err := ValidContainerID(a.ContainerID); err != nil {
		return cnierr.New(cnierr.InvalidEnv, "invalid CNI_CONTAINERID", err)
	}
	if !needNetNS {
		return nil
	}
	if a.NetNS == "" {
		return cnierr.Newf(cnierr.InvalidEnv, "CNI_NETNS is empty")
	}
	if err := m.net.CheckNetNS(a.NetNS); err != nil {
		return cnierr.New(cnierr.InvalidEnv, fmt.Sprintf("CNI_NETNS %q is not a network namespace", a.NetNS), err)
	}
	return nil
}

// Check verifies the container's ts0, its addresses and a running node.
func (m *Manager) Check(ctx context.Context, a Attachment) (err error) {
	start := m.clock.Now()
	defer func() { m.metrics.observe("check", m.clock.Since(start), err) }()
	if err := m.validateAttachment(a, true); err != nil {
		return err
	}
	unlock := m.lock(a.ContainerID)
	defer unlock()
	p := m.podByID(a.ContainerID)
	if p == nil || !p.rec.Ready {
		return cnierr.Newf(cnierr.UnknownContainer, "container %s has no tailnet attachment", a.ContainerID)
	}
	if p.rec.NetNS != a.NetNS {
		return cnierr.Newf(cnierr.InvalidEnv, "container %s is attached in netns %s, not %s", a.ContainerID, p.rec.NetNS, a.NetNS)
	}
	if p.rec.OptOut {
		return nil
	}
	return m.checkPod(p)
}

// OptedOut reports whether the container's pod opted out of tailscale-cni
// (its ADD made no ts0).
func (m *Manager) OptedOut(containerID string) bool {
	p := m.podByID(containerID)
	return p != nil && p.rec.OptOut
}

func (m *Manager) checkPod(p *pod) error {
	if p.backend == nil {
		return cnierr.Newf(cnierr.NodeNotReady, "pod %s has no running node", p.rec.ContainerID)
	}
	if st := p.backend.State(); st != ipn.Running {
		return cnierr.Newf(cnierr.NodeNotReady, "pod %s's node is %v, not Running", p.rec.ContainerID, st)
	}
	if err := m.net.Check(p.kernel(), p.rec.Addrs); err != nil {
		return cnierr.New(cnierr.Internal, "ts0 is not as ADD left it", err)
	}
	return nil
}

// kernel names the pod's kernel objects: the names its record holds (a
// node from the pool), or the container ID's.
func (p *pod) kernel() podnet.Pod {
	if p.rec.HostVeth != "" && p.rec.TUN != "" {
		return podnet.Pod{Names: podnet.Names{HostVeth: p.rec.HostVeth, TUN: p.rec.TUN}, Table: p.rec.Table, NetNS: p.rec.NetNS}
	}
	return podnet.PodFor(p.rec.ContainerID, p.rec.NetNS, p.rec.Table)
}

func (m *Manager) save(rec *PodRecord) error {
	dir := PodDir(m.cfg.StateDir, rec.ContainerID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, RecordFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, RecordFile))
}

func (m *Manager) load(id string) (*PodRecord, error) {
	data, err := os.ReadFile(filepath.Join(PodDir(m.cfg.StateDir, id), RecordFile))
	if err != nil {
		return nil, err
	}
	var rec PodRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", RecordFile, err)
	}
	if rec.ContainerID != id {
		return nil, fmt.Errorf("%s names container %q, not %q", RecordFile, rec.ContainerID, id)
	}
	// The daemon removes NodeDir with the pod: it must be a pool dir.
	if rec.NodeDir != "" && (filepath.Dir(rec.NodeDir) != filepath.Join(m.cfg.StateDir, poolDirName) || !strings.HasPrefix(filepath.Base(rec.NodeDir), "pool-")) {
		return nil, fmt.Errorf("%s names node dir %q, which is not in the pool's dir", RecordFile, rec.NodeDir)
	}
	return &rec, nil
}

func (m *Manager) podLogf(rec *PodRecord) logger.Logf {
	name := rec.Namespace + "/" + rec.Pod
	if rec.Pod == "" {
		name = rec.ContainerID
	}
	logf := m.cfg.BackendLogf
	if logf == nil {
		logf = m.logf
	}
	return logger.WithPrefix(logf, "pod "+name+": ")
}
