package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"tailscale.com/ipn"
	"tailscale.com/net/netmon"
	"tailscale.com/types/logger"
	"tailscale.com/util/eventbus"
	"tsymbiote.dhouti.dev/cni/internal/cnierr"
	"tsymbiote.dhouti.dev/cni/internal/podbackend"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
	"tsymbiote.dhouti.dev/controlplane"
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
	backend *podbackend.Backend
	socket  string
}

// Manager keeps the node's pods.
type Manager struct {
	logf    logger.Logf
	cfg     Config
	cp      controlplane.Client
	bus     *eventbus.Bus
	netMon  *netmon.Monitor
	metrics *Metrics
	busCli  *eventbus.Client

	mu    sync.Mutex
	pods  map[string]*pod        // by container ID
	locks map[string]*sync.Mutex // per container ID, held by ADD/DEL/CHECK
	ready error                  // nil when ADD can be served
}

// NewManager starts the shared network monitor. Call Recover before serving.
func NewManager(logf logger.Logf, cfg Config, cp controlplane.Client, metrics *Metrics) (*Manager, error) {
	cfg = cfg.WithDefaults()
	if metrics == nil {
		metrics = NewMetrics()
	}
	m := &Manager{
		logf: logf, cfg: cfg, cp: cp, metrics: metrics,
		bus:   eventbus.New(),
		pods:  map[string]*pod{},
		locks: map[string]*sync.Mutex{},
	}
	metrics.podsFunc = m.podStates
	for _, d := range []string{filepath.Join(cfg.StateDir, "pods"), filepath.Join(cfg.RunDir, "pods")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	if _, err := podnet.EnableForwarding(cfg.IPv6); err != nil {
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
	nm, err := netmon.New(m.bus, logger.WithPrefix(nmLogf, "netmon: "))
	if err != nil {
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
	var bs []*podbackend.Backend
	for _, p := range m.pods {
		if p.backend != nil {
			bs = append(bs, p.backend)
		}
	}
	m.mu.Unlock()
	for _, b := range bs {
		b.Relay(cd)
	}
}

// Close shuts down every backend without deleting pods: their state stays
// for the next daemon to recover.
func (m *Manager) Close() {
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
		if p.backend != nil {
			st = p.backend.State().String()
		}
		out[st]++
	}
	return out
}

func validateAttachment(a Attachment, needNetNS bool) error {
	if err := ValidContainerID(a.ContainerID); err != nil {
		return cnierr.New(cnierr.InvalidEnv, "invalid CNI_CONTAINERID", err)
	}
	if !needNetNS {
		return nil
	}
	if a.NetNS == "" {
		return cnierr.Newf(cnierr.InvalidEnv, "CNI_NETNS is empty")
	}
	nsh, err := ns.GetNS(a.NetNS)
	if err != nil {
		return cnierr.New(cnierr.InvalidEnv, fmt.Sprintf("CNI_NETNS %q is not a network namespace", a.NetNS), err)
	}
	nsh.Close()
	return nil
}

// Add gives the attachment's pod its tailnet node and ts0.
func (m *Manager) Add(ctx context.Context, a Attachment) (_ *Result, err error) {
	start := time.Now()
	defer func() { m.metrics.observe("add", start, err) }()
	if err := validateAttachment(a, true); err != nil {
		return nil, err
	}
	if _, rerr := m.Status(); rerr != nil {
		if errors.Is(rerr, controlplane.ErrUnauthorized) {
			return nil, cnierr.New(cnierr.ControlPlaneRefused, "the control plane refuses the daemon's credentials, so it cannot mint auth keys", rerr)
		}
		return nil, cnierr.New(cnierr.TryAgainLater, "tailscale-cni daemon not ready (control plane unreachable?); try again later", rerr)
	}
	unlock := m.lock(a.ContainerID)
	defer unlock()

	m.mu.Lock()
	existing := m.pods[a.ContainerID]
	m.mu.Unlock()
	if existing != nil {
		if existing.rec.NetNS == a.NetNS && existing.backend != nil && existing.rec.Ready {
			// A repeated ADD (the runtime retried after a timeout):
			// answer with what is there if it is whole.
			if err := m.checkPod(existing); err == nil {
				return m.result(existing)
			}
		}
		m.logf("pod %s: ADD for a container already set up; replacing it", a.ContainerID)
		if err := m.delete(ctx, existing); err != nil && !errors.Is(err, errNodeNotDeleted) {
			m.logf("pod %s: removing the old attachment: %v", a.ContainerID, err)
		}
	}

	rec := PodRecord{
		ContainerID: a.ContainerID, NetNS: a.NetNS, IfName: a.IfName, Network: a.Network,
		Namespace: a.Namespace, Pod: a.Pod, PodUID: a.PodUID,
		Hostname: Hostname(m.cfg.ClusterName, a.Namespace, a.Pod, a.ContainerID),
		Created:  time.Now().UTC(),
	}
	m.mu.Lock()
	rec.Table, err = podnet.PickTable(a.ContainerID, m.tableInUseLocked)
	p := &pod{rec: rec, socket: SocketPath(m.cfg.RunDir, a.Namespace, a.Pod, a.ContainerID)}
	if err == nil {
		m.pods[a.ContainerID] = p
	}
	m.mu.Unlock()
	if err != nil {
		return nil, cnierr.New(cnierr.Internal, "no routing table free", err)
	}
	defer func() {
		if err != nil {
			if derr := m.delete(context.WithoutCancel(ctx), p); derr != nil && !errors.Is(derr, errNodeNotDeleted) {
				m.logf("pod %s: cleaning up after a failed ADD: %v", a.ContainerID, derr)
			}
		}
	}()
	// The record goes to disk first so that a daemon that dies from here
	// on finds, and removes, what this ADD made.
	if err := m.save(&p.rec); err != nil {
		return nil, cnierr.New(cnierr.IOFailure, "saving pod state", err)
	}
	pn := podnet.PodFor(a.ContainerID, a.NetNS, rec.Table)
	if err := podnet.PrepareHost(pn); err != nil {
		return nil, cnierr.New(cnierr.Internal, "setting up policy routing", err)
	}

	tPrep := time.Now()
	key, err := m.cp.CreateAuthKey(ctx, controlplane.AuthKeyRequest{
		Tags: m.cfg.Tags, Ephemeral: m.cfg.Ephemeral, Preauthorized: true,
		Expiry: m.cfg.AuthKeyTTL, Description: "tailscale-cni " + rec.Hostname,
	})
	if err != nil {
		return nil, controlPlaneError("minting an auth key", err)
	}
	tKey := time.Now()
	b, err := m.startBackend(p, key.Key.Reveal())
	if err != nil {
		return nil, err
	}
	tStart := time.Now()
	wctx, cancel := context.WithTimeout(ctx, m.cfg.AddTimeout)
	defer cancel()
	wait := b.WaitAddresses
	if m.cfg.AddWaitsForRunning {
		wait = b.WaitRunning
	}
	run, err := wait(wctx)
	if err != nil {
		if errors.Is(err, podbackend.ErrLoginFailed) {
			return nil, cnierr.New(cnierr.ControlPlaneRefused, "the control plane refused the pod's login", err)
		}
		return nil, cnierr.New(cnierr.NodeNotReady, fmt.Sprintf("node %s did not come up within %v", rec.Hostname, m.cfg.AddTimeout), err)
	}
	p.rec.NodeID = run.NodeID
	tReg := time.Now()
	// Not an error when it takes longer: the pod works, and its peers
	// reach it after one WireGuard retry.
	published := b.WaitPublished(wctx, m.cfg.PublishWait)
	tPub := time.Now()
	if err := m.save(&p.rec); err != nil {
		return nil, cnierr.New(cnierr.IOFailure, "saving pod state", err)
	}
	if err := m.attach(p, run.Addrs); err != nil {
		return nil, err
	}
	p.rec.Ready = true
	if err := m.save(&p.rec); err != nil {
		return nil, cnierr.New(cnierr.IOFailure, "saving pod state", err)
	}
	ms := func(a, b time.Time) time.Duration { return b.Sub(a).Round(time.Millisecond) }
	m.logf("pod %s/%s: up as %s (%v) in %v: prepare %v, key %v, start %v, register %v, publish %v (done %v), wire %v",
		a.Namespace, a.Pod, rec.Hostname, p.rec.Addrs, ms(start, time.Now()),
		ms(start, tPrep), ms(tPrep, tKey), ms(tKey, tStart), ms(tStart, tReg), ms(tReg, tPub), published, ms(tPub, time.Now()))
	return m.result(p)
}

func (m *Manager) tableInUseLocked(t int) bool {
	for _, p := range m.pods {
		if p.rec.Table == t {
			return true
		}
	}
	return false
}

func (m *Manager) startBackend(p *pod, authKey string) (*podbackend.Backend, error) {
	pn := podnet.PodFor(p.rec.ContainerID, p.rec.NetNS, p.rec.Table)
	id := p.rec.ContainerID
	// A pod's engine allocates about 40 MiB of packet buffers (wireguard-go
	// and tstun size their batches at 128 × 64 KiB on Linux) that stay
	// allocated for the pod's life and are mostly never written. Landing
	// on pages the runtime has just handed back to the kernel, they are
	// known to be zero and stay untouched, so not resident; landing on the
	// garbage of earlier ADDs, Go zeroes them and every page becomes
	// resident for good. So collect and release first: a few milliseconds
	// per ADD for megabytes per pod.
	debug.FreeOSMemory()
	b, err := podbackend.Start(m.podLogf(&p.rec), podbackend.Config{
		Pod:        pn,
		Hostname:   p.rec.Hostname,
		ControlURL: m.cp.ControlURL(),
		AuthKey:    authKey,
		StateDir:   PodDir(m.cfg.StateDir, id),
		Socket:     p.socket,
		NetMon:     m.netMon,
		OnAddrs:    func(addrs []netip.Prefix) { m.addrsChanged(id, addrs) },
	})
	if err != nil {
		return nil, cnierr.New(cnierr.Internal, "starting the pod's node", err)
	}
	m.mu.Lock()
	p.backend = b
	m.mu.Unlock()
	return b, nil
}

func (m *Manager) attach(p *pod, addrs []netip.Prefix) error {
	if !m.cfg.IPv6 {
		var v4 []netip.Prefix
		for _, a := range addrs {
			if a.Addr().Is4() {
				v4 = append(v4, a)
			}
		}
		addrs = v4
	}
	pn := podnet.PodFor(p.rec.ContainerID, p.rec.NetNS, p.rec.Table)
	got, err := podnet.AttachPod(m.podLogf(&p.rec), pn, addrs)
	if err != nil {
		return cnierr.New(cnierr.Internal, "wiring ts0 into the pod", err)
	}
	p.rec.Addrs = got
	return nil
}

// addrsChanged follows a node whose addresses the control plane changed.
func (m *Manager) addrsChanged(id string, addrs []netip.Prefix) {
	unlock := m.lock(id)
	defer unlock()
	m.mu.Lock()
	p := m.pods[id]
	m.mu.Unlock()
	if p == nil || !p.rec.Ready {
		return // ADD or recovery is still wiring it up and will use the new ones
	}
	want := podnet.HostAddrs(addrs)
	if samePrefixes(want, p.rec.Addrs) || (!m.cfg.IPv6 && samePrefixes(v4only(want), p.rec.Addrs)) {
		return
	}
	m.logf("pod %s: addresses changed %v -> %v", id, p.rec.Addrs, want)
	if err := m.attach(p, want); err != nil {
		m.logf("pod %s: rewiring: %v", id, err)
		return
	}
	if err := m.save(&p.rec); err != nil {
		m.logf("pod %s: saving state: %v", id, err)
	}
}

func v4only(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() {
			out = append(out, p)
		}
	}
	return out
}

func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (m *Manager) result(p *pod) (*Result, error) {
	pn := podnet.PodFor(p.rec.ContainerID, p.rec.NetNS, p.rec.Table)
	mac, err := podnet.PodMAC(pn)
	if err != nil {
		return nil, cnierr.New(cnierr.Internal, "reading ts0", err)
	}
	return &Result{
		Interface: podnet.PodIfName, MAC: mac, Sandbox: p.rec.NetNS,
		Addrs: p.rec.Addrs, NodeID: p.rec.NodeID, Hostname: p.rec.Hostname,
	}, nil
}

func controlPlaneError(what string, err error) error {
	if errors.Is(err, controlplane.ErrUnauthorized) {
		return cnierr.New(cnierr.ControlPlaneRefused, "the control plane refused "+what, err)
	}
	var ce interface{ StatusCode() int }
	if errors.As(err, &ce) && ce.StatusCode() >= 400 && ce.StatusCode() < 500 {
		return cnierr.New(cnierr.ControlPlaneRefused, "the control plane refused "+what, err)
	}
	return cnierr.New(cnierr.TryAgainLater, "control plane unreachable while "+what+"; try again later", err)
}

// errNodeNotDeleted tells delete's internal callers (RetryDeletes) that the
// node is still in the control plane; Del reports success all the same.
var errNodeNotDeleted = errors.New("node not yet deleted from the control plane")

// Del removes everything ADD made for the container. It succeeds for
// containers the daemon never saw and when called twice.
func (m *Manager) Del(ctx context.Context, a Attachment) (err error) {
	start := time.Now()
	defer func() { m.metrics.observe("del", start, err) }()
	if err := validateAttachment(a, false); err != nil {
		return err
	}
	unlock := m.lock(a.ContainerID)
	defer unlock()
	m.mu.Lock()
	p := m.pods[a.ContainerID]
	m.mu.Unlock()
	if p == nil {
		// Not in memory: maybe a record recovery could not bring back.
		rec, err := m.load(a.ContainerID)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			m.logf("pod %s: unreadable state, removing it: %v", a.ContainerID, err)
		}
		if rec == nil {
			rec = &PodRecord{ContainerID: a.ContainerID, NetNS: a.NetNS}
		}
		p = &pod{rec: *rec, socket: SocketPath(m.cfg.RunDir, rec.Namespace, rec.Pod, rec.ContainerID)}
	}
	if err := m.delete(ctx, p); err != nil && !errors.Is(err, errNodeNotDeleted) {
		return err
	}
	return nil
}

// delete tears a pod down. The caller holds the container's lock.
func (m *Manager) delete(ctx context.Context, p *pod) error {
	id := p.rec.ContainerID
	if p.backend != nil {
		p.backend.Close()
	}
	var errs []error
	// keepRecord: the node could not be deleted from the control plane.
	// The pod is gone from the node all the same (DEL must not wait on the
	// control plane, or pod deletion would hang for as long as it is
	// down); the record stays for RetryDeletes.
	keepRecord := false
	if p.rec.NodeID != "" {
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := m.cp.DeleteDevice(dctx, p.rec.NodeID)
		cancel()
		if err != nil && !errors.Is(err, controlplane.ErrNotFound) {
			m.logf("pod %s: deleting node %s failed, will retry: %v", id, p.rec.NodeID, err)
			keepRecord = true
		}
	}
	pn := podnet.PodFor(id, p.rec.NetNS, p.rec.Table)
	if p.rec.Table == 0 {
		pn.Table = -1 // unknown: Teardown still removes links by name
	}
	if err := podnet.Teardown(pn); err != nil {
		errs = append(errs, cnierr.New(cnierr.Internal, "removing links, rules and routes", err))
	}
	if keepRecord {
		p.rec.Deleting, p.rec.Ready = true, false
		if err := m.save(&p.rec); err != nil {
			errs = append(errs, cnierr.New(cnierr.IOFailure, "saving the record of a node still to delete", err))
		}
		if p.socket != "" && m.socketOwner(p.socket, p) == nil {
			os.Remove(p.socket)
			os.Remove(filepath.Dir(p.socket))
		}
	} else if err := m.removeFiles(p); err != nil {
		errs = append(errs, cnierr.New(cnierr.IOFailure, "removing pod state", err))
	}
	m.mu.Lock()
	if m.pods[id] == p {
		delete(m.pods, id)
	}
	m.mu.Unlock()
	if len(errs) > 0 {
		return errs[0]
	}
	if keepRecord {
		return errNodeNotDeleted
	}
	return nil
}

func (m *Manager) removeFiles(p *pod) error {
	var errs []error
	if err := os.RemoveAll(PodDir(m.cfg.StateDir, p.rec.ContainerID)); err != nil {
		errs = append(errs, err)
	}
	// The socket dir is keyed by pod name: a newer sandbox of the same pod
	// may serve it by now, and then it stays.
	if p.socket != "" && m.socketOwner(p.socket, p) == nil {
		os.Remove(p.socket)
		os.Remove(filepath.Dir(p.socket))
	}
	return errors.Join(errs...)
}

// socketOwner returns the live pod other than except serving socket, if any.
func (m *Manager) socketOwner(socket string, except *pod) *pod {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.pods {
		if p != except && p.socket == socket && p.backend != nil {
			return p
		}
	}
	return nil
}

// Check verifies the container's ts0, its addresses and a running node.
func (m *Manager) Check(ctx context.Context, a Attachment) (err error) {
	start := time.Now()
	defer func() { m.metrics.observe("check", start, err) }()
	if err := validateAttachment(a, true); err != nil {
		return err
	}
	unlock := m.lock(a.ContainerID)
	defer unlock()
	m.mu.Lock()
	p := m.pods[a.ContainerID]
	m.mu.Unlock()
	if p == nil || !p.rec.Ready {
		return cnierr.Newf(cnierr.UnknownContainer, "container %s has no tailnet attachment", a.ContainerID)
	}
	if p.rec.NetNS != a.NetNS {
		return cnierr.Newf(cnierr.InvalidEnv, "container %s is attached in netns %s, not %s", a.ContainerID, p.rec.NetNS, a.NetNS)
	}
	return m.checkPod(p)
}

func (m *Manager) checkPod(p *pod) error {
	if p.backend == nil {
		return cnierr.Newf(cnierr.NodeNotReady, "pod %s has no running node", p.rec.ContainerID)
	}
	if st := p.backend.State(); st != ipn.Running {
		return cnierr.Newf(cnierr.NodeNotReady, "pod %s's node is %v, not Running", p.rec.ContainerID, st)
	}
	pn := podnet.PodFor(p.rec.ContainerID, p.rec.NetNS, p.rec.Table)
	if err := podnet.Check(pn, p.rec.Addrs); err != nil {
		return cnierr.New(cnierr.Internal, "ts0 is not as ADD left it", err)
	}
	return nil
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
