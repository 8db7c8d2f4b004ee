package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"tsymbiote.dhouti.dev/cni/internal/cnierr"
	"tsymbiote.dhouti.dev/cni/internal/podbackend"
	"tsymbiote.dhouti.dev/cni/internal/poddns"
	"tsymbiote.dhouti.dev/cni/internal/podmeta"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/proto/contract"
)

// Add gives the attachment's pod its tailnet node and ts0. Its phases run
// in order, each ending at a mark of addTimeline; once the pod is reserved,
// a failure in any phase deletes everything the earlier ones made.
func (m *Manager) Add(ctx context.Context, a Attachment) (_ *Result, err error) {
	tl := addTimeline{start: m.clock.Now()}
	defer func() { m.metrics.observe("add", m.clock.Since(tl.start), err) }()
	if err := m.admit(a); err != nil {
		return nil, err
	}
	opts, err := m.podOptions(ctx, a)
	if err != nil {
		return nil, err
	}
	unlock := m.lock(a.ContainerID)
	defer unlock()
	if p := m.podByID(a.ContainerID); p != nil {
		if m.isWholeRepeat(p, a) && p.rec.OptOut == opts.OptOut {
			return m.result(p)
		}
		m.replace(ctx, p)
	}
	if opts.OptOut {
		return m.optOut(a)
	}
	if p := m.takeFromPool(a, opts); p != nil {
		return m.addFromPool(ctx, p, tl)
	}
	p, err := m.reserve(a, opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.undoAdd(ctx, p)
		}
	}()
	if err := m.prepareHost(p); err != nil {
		return nil, err
	}
	tl.prepared = m.clock.Now()
	if err := m.checkTagsOwnable(ctx, p); err != nil {
		return nil, err
	}
	key, err := m.mintKey(ctx, p)
	if err != nil {
		return nil, err
	}
	tl.minted = m.clock.Now()
	b, err := m.startBackend(p, key)
	if err != nil {
		return nil, err
	}
	tl.started = m.clock.Now()
	wctx, cancel := context.WithTimeout(ctx, m.cfg.AddTimeout)
	defer cancel()
	run, err := m.waitRegistered(wctx, p, b)
	if err != nil {
		return nil, err
	}
	tl.registered = m.clock.Now()
	// Not an error when it takes longer: the pod works, and its peers
	// reach it after one WireGuard retry.
	published := b.WaitPublished(wctx, m.cfg.PublishWait)
	tl.published = m.clock.Now()
	if err := m.wire(p, run.Addrs); err != nil {
		return nil, err
	}
	if err := m.startDNS(p); err != nil {
		return nil, err
	}
	if err := m.save(&p.rec); err != nil {
		return nil, cnierr.New(cnierr.IOFailure, "saving pod state", err)
	}
	m.logUp(p, tl, published)
	return m.result(p)
}

// admit refuses, before anything is made, attachments that are malformed
// and ADDs the daemon cannot serve yet: the runtime retries those.
func (m *Manager) admit(a Attachment) error {
	if err := m.validateAttachment(a, true); err != nil {
		return err
	}
	if _, rerr := m.Status(); rerr != nil {
		if errors.Is(rerr, controlplane.ErrUnauthorized) {
			return cnierr.New(cnierr.ControlPlaneRefused, "the control plane refuses the daemon's credentials, so it cannot mint auth keys", rerr)
		}
		return cnierr.New(cnierr.TryAgainLater, "tailscale-cni daemon not ready (control plane unreachable?); try again later", rerr)
	}
	return nil
}

// isWholeRepeat reports whether ADD is repeated (the runtime retried after
// a timeout) for a pod that is whole, which is then answered as it is.
func (m *Manager) isWholeRepeat(p *pod, a Attachment) bool {
	if p.rec.OptOut {
		return p.rec.NetNS == a.NetNS
	}
	return p.rec.NetNS == a.NetNS && p.backend != nil && p.rec.Ready && m.checkPod(p) == nil
}

// replace deletes an attachment of the container that a new ADD supersedes
// (another netns, or half made): two would fight over the same links.
func (m *Manager) replace(ctx context.Context, p *pod) {
	m.logf("pod %s: ADD for a container already set up; replacing it", p.rec.ContainerID)
	if err := m.delete(ctx, p); err != nil && !errors.Is(err, errNodeNotDeleted) {
		m.logf("pod %s: removing the old attachment: %v", p.rec.ContainerID, err)
	}
}

// reserve records the new pod and claims its routing table, under mu so
// that concurrent ADDs never pick the same table.
func (m *Manager) reserve(a Attachment, opts podmeta.Options) (*pod, error) {
	rec := m.newRecord(a, opts)
	m.mu.Lock()
	defer m.mu.Unlock()
	t, err := podnet.PickTable(a.ContainerID, m.tableInUseLocked)
	if err != nil {
		return nil, cnierr.New(cnierr.Internal, "no routing table free", err)
	}
	rec.Table = t
	p := &pod{rec: rec, socket: SocketPath(m.cfg.RunDir, a.Namespace, a.Pod, a.ContainerID)}
	m.pods[a.ContainerID] = p
	return p, nil
}

// newRecord is the record of a new pod, before it has a table or node.
func (m *Manager) newRecord(a Attachment, opts podmeta.Options) PodRecord {
	rec := PodRecord{
		ContainerID: a.ContainerID, NetNS: a.NetNS, IfName: a.IfName, Network: a.Network,
		Namespace: a.Namespace, Pod: a.Pod, PodUID: a.PodUID,
		Hostname: Hostname(m.cfg.ClusterName, a.Namespace, a.Pod, a.ContainerID),
		Created:  m.clock.Now().UTC(),
		Tags:     opts.Tags,
	}
	if opts.Hostname != "" {
		rec.Hostname = opts.Hostname
	}
	return rec
}

// undoAdd deletes what a failed ADD made; the runtime's DEL would too, but
// it may never come for an ADD that failed.
func (m *Manager) undoAdd(ctx context.Context, p *pod) {
	if err := m.delete(context.WithoutCancel(ctx), p); err != nil && !errors.Is(err, errNodeNotDeleted) {
		m.logf("pod %s: cleaning up after a failed ADD: %v", p.rec.ContainerID, err)
	}
}

// prepareHost saves the record, then installs the pod's rules and table.
// The record goes to disk first so that a daemon that dies from here on
// finds, and removes, what this ADD made.
func (m *Manager) prepareHost(p *pod) error {
	if err := m.save(&p.rec); err != nil {
		return cnierr.New(cnierr.IOFailure, "saving pod state", err)
	}
	if err := m.net.PrepareHost(p.kernel()); err != nil {
		return cnierr.New(cnierr.Internal, "setting up policy routing", err)
	}
	return nil
}

// mintKey gets the one-use key the pod's node registers with.
func (m *Manager) mintKey(ctx context.Context, p *pod) (string, error) {
	tags := m.cfg.Tags
	if len(p.rec.Tags) > 0 {
		tags = p.rec.Tags
	}
	key, err := m.cp.CreateAuthKey(ctx, controlplane.AuthKeyRequest{
		Tags: tags, Ephemeral: m.cfg.Ephemeral, Preauthorized: true,
		Expiry: m.cfg.AuthKeyTTL, Description: "tailscale-cni " + p.rec.Hostname,
	})
	if err != nil {
		err = controlPlaneError("minting an auth key", err)
		if len(p.rec.Tags) > 0 && cnierr.CodeOf(err) == cnierr.ControlPlaneRefused {
			return "", tagsRefused(p, err)
		}
		return "", err
	}
	return key.Key.Reveal(), nil
}

// waitRegistered waits until the node has registered and has its
// addresses (or, with AddWaitsForRunning, is Running), and records its ID
// so that a later failure deletes the node.
func (m *Manager) waitRegistered(ctx context.Context, p *pod, b PodBackend) (*podbackend.Running, error) {
	wait := b.WaitAddresses
	if m.cfg.AddWaitsForRunning {
		wait = b.WaitRunning
	}
	run, err := wait(ctx)
	if err != nil {
		if errors.Is(err, podbackend.ErrLoginFailed) {
			err = cnierr.New(cnierr.ControlPlaneRefused, "the control plane refused the pod's login", err)
			if len(p.rec.Tags) > 0 {
				return nil, tagsRefused(p, err)
			}
			return nil, err
		}
		return nil, cnierr.New(cnierr.NodeNotReady, fmt.Sprintf("node %s did not come up within %v", p.rec.Hostname, m.cfg.AddTimeout), err)
	}
	p.rec.NodeID = run.NodeID
	return run, nil
}

// wire gives the pod ts0 with the node's addresses and marks it Ready. The
// record is saved before (a daemon that dies now deletes the node) and
// after (it recovers the pod).
func (m *Manager) wire(p *pod, addrs []netip.Prefix) error {
	if err := m.save(&p.rec); err != nil {
		return cnierr.New(cnierr.IOFailure, "saving pod state", err)
	}
	if err := m.attach(p, addrs); err != nil {
		return err
	}
	p.rec.Ready = true
	if err := m.save(&p.rec); err != nil {
		return cnierr.New(cnierr.IOFailure, "saving pod state", err)
	}
	return nil
}

// addTimeline is when ADD started and when each of its phases ended, for
// the one line ADD logs: it says where a slow ADD spent its time.
type addTimeline struct {
	start, prepared, minted, started, registered, published time.Time
}

func (m *Manager) logUp(p *pod, tl addTimeline, published bool) {
	now := m.clock.Now()
	ms := func(a, b time.Time) time.Duration { return b.Sub(a).Round(time.Millisecond) }
	m.logf("pod %s/%s: up as %s (%v) in %v: prepare %v, key %v, start %v, register %v, publish %v (done %v), wire %v",
		p.rec.Namespace, p.rec.Pod, p.rec.Hostname, p.rec.Addrs, ms(tl.start, now),
		ms(tl.start, tl.prepared), ms(tl.prepared, tl.minted), ms(tl.minted, tl.started),
		ms(tl.started, tl.registered), ms(tl.registered, tl.published), published, ms(tl.published, now))
}

func (m *Manager) tableInUseLocked(t int) bool {
	for _, p := range m.pods {
		if p.rec.Table == t {
			return true
		}
	}
	for _, e := range m.pool.entries {
		if e.rec.Table == t {
			return true
		}
	}
	return false
}

// startBackend starts the pod's node, with authKey to register, or with
// none to come back with the identity in its state dir.
func (m *Manager) startBackend(p *pod, authKey string) (PodBackend, error) {
	id := p.rec.ContainerID
	// A pod's engine allocates about 40 MiB of packet buffers (wireguard-go
	// and tstun size their batches at 128 × 64 KiB on Linux) that stay
	// allocated for the pod's life and are mostly never written. Landing
	// on pages the runtime has just handed back to the kernel, they are
	// known to be zero and stay untouched, so not resident; landing on the
	// garbage of earlier ADDs, Go zeroes them and every page becomes
	// resident for good. So collect and release first: a few milliseconds
	// per ADD for megabytes per pod.
	memRelease.release()
	b, err := m.start(m.podLogf(&p.rec), podbackend.Config{
		Pod:        p.kernel(),
		Hostname:   p.rec.Hostname,
		ControlURL: m.cp.ControlURL(),
		AuthKey:    authKey,
		StateDir:   p.rec.nodeDir(m.cfg.StateDir),
		Socket:     p.socket,
		NetMon:     m.netMon,
		OnAddrs:    func(addrs []netip.Prefix) { m.addrsChanged(id, addrs) },
		MagicDNS:   m.dns != nil || m.cfg.Netstack,
		Netstack:   m.cfg.Netstack,
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
		addrs = v4only(addrs)
	}
	got, err := m.net.AttachPod(m.podLogf(&p.rec), p.kernel(), addrs)
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
	p := m.podByID(id)
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
	if p.rec.OptOut {
		return &Result{}, nil
	}
	mac, err := m.net.PodMAC(p.kernel())
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

// podOptions reads the pod's annotations. Without a PodSource, or for a
// sandbox the API server does not know, the daemon's defaults apply; an
// API server that cannot answer fails ADD (retried by the runtime) rather
// than, say, attaching a pod that opted out.
func (m *Manager) podOptions(ctx context.Context, a Attachment) (podmeta.Options, error) {
	if m.podSrc == nil || a.Pod == "" {
		return podmeta.Options{}, nil
	}
	ann, err := m.podSrc.Annotations(ctx, a.Namespace, a.Pod)
	if errors.Is(err, podmeta.ErrNoPod) {
		m.logf("pod %s/%s: not in the API server; defaults apply", a.Namespace, a.Pod)
		return podmeta.Options{}, nil
	}
	if err != nil {
		return podmeta.Options{}, cnierr.New(cnierr.TryAgainLater, fmt.Sprintf("reading the annotations of pod %s/%s; try again later", a.Namespace, a.Pod), err)
	}
	opts, err := podmeta.Parse(ann)
	if err != nil {
		return opts, cnierr.New(cnierr.InvalidNetConf, fmt.Sprintf("pod %s/%s", a.Namespace, a.Pod), err)
	}
	return opts, nil
}

// optOut records a pod that opted out, so that CHECK, GC and the sweep
// know it, and returns a result without interfaces: the shim then hands
// back prevResult untouched.
func (m *Manager) optOut(a Attachment) (*Result, error) {
	p := &pod{rec: PodRecord{
		ContainerID: a.ContainerID, NetNS: a.NetNS, IfName: a.IfName, Network: a.Network,
		Namespace: a.Namespace, Pod: a.Pod, PodUID: a.PodUID, Created: m.clock.Now().UTC(),
		OptOut: true, Ready: true,
	}}
	if err := m.save(&p.rec); err != nil {
		return nil, cnierr.New(cnierr.IOFailure, "saving pod state", err)
	}
	m.mu.Lock()
	m.pods[a.ContainerID] = p
	m.mu.Unlock()
	m.logf("pod %s/%s: opted out (%s: \"false\"); no tailnet node", a.Namespace, a.Pod, contract.AnnotationCNI)
	return &Result{}, nil
}

// tagsRefused names the pod's own tags in the error of a control plane
// that refused them: they are the likeliest cause, and the one the pod's
// owner can fix.
func tagsRefused(p *pod, err error) error {
	msg := fmt.Sprintf("the control plane refused tag %s from pod %s/%s's annotation %s (may the daemon's credentials own it? see tagOwners in the tailnet policy)",
		strings.Join(p.rec.Tags, ","), p.rec.Namespace, p.rec.Pod, contract.AnnotationTags)
	return cnierr.New(cnierr.ControlPlaneRefused, msg, err)
}

// startDNS starts the pod's DNS service when the daemon serves MagicDNS.
// A pod recovered from a daemon that served other addresses (MagicDNS
// turned off, or another --cluster-dns) first loses those from its lo:
// with nobody listening there, its DNS would fail for good.
func (m *Manager) startDNS(p *pod) error {
	var want []netip.Addr
	if m.dns != nil {
		want = m.dns.Addrs()
	}
	var stale []netip.Addr
	for _, a := range p.rec.DNSAddrs {
		if !slices.Contains(want, a) {
			stale = append(stale, a)
		}
	}
	if len(stale) > 0 {
		if err := podnet.RemoveLoopbackAddrs(p.rec.NetNS, stale); err != nil {
			m.logf("pod %s: removing DNS addresses %v the daemon no longer serves: %v", p.rec.ContainerID, stale, err)
		}
	}
	p.rec.DNSAddrs = nil
	node, ok := p.backend.(poddns.Node)
	if m.dns == nil || !ok {
		return nil
	}
	stop, err := m.dns.Start(m.podLogf(&p.rec), p.rec.NetNS, node, m.metrics.dnsQuery)
	if err != nil {
		return cnierr.New(cnierr.Internal, "serving MagicDNS in the pod", err)
	}
	m.mu.Lock()
	p.stopDNS = stop
	p.rec.DNSAddrs = want
	m.mu.Unlock()
	return nil
}

// policyReader is the part of controlplane.Client that reads the tailnet
// policy. A control plane whose credentials cannot read it (a Tailscale
// OAuth client with only devices and auth-key scopes) refuses unowned tags
// itself when minting the key; Headscale's admin API key mints keys with
// any tag, so there the daemon checks tagOwners before minting.
type policyReader interface {
	GetPolicy(ctx context.Context) (*controlplane.Policy, error)
}

// checkTagsOwnable refuses a pod's own tags that the tailnet policy's
// tagOwners does not list: nobody may own them, so no key should carry
// them. It says nothing when the policy cannot be read.
func (m *Manager) checkTagsOwnable(ctx context.Context, p *pod) error {
	pr, ok := m.cp.(policyReader)
	if !ok || len(p.rec.Tags) == 0 {
		return nil
	}
	pol, err := pr.GetPolicy(ctx)
	if err != nil {
		m.logf("pod %s/%s: cannot read the tailnet policy to check its tags (the control plane will): %v", p.rec.Namespace, p.rec.Pod, err)
		return nil
	}
	owners, err := podmeta.TagOwners([]byte(pol.Body))
	if err != nil {
		m.logf("pod %s/%s: cannot parse the tailnet policy to check its tags (the control plane will): %v", p.rec.Namespace, p.rec.Pod, err)
		return nil
	}
	for _, t := range p.rec.Tags {
		if !owners[t] {
			return cnierr.Newf(cnierr.ControlPlaneRefused, "tag %s from pod %s/%s's annotation %s is not in the tailnet policy's tagOwners, so the daemon's credentials cannot own it",
				t, p.rec.Namespace, p.rec.Pod, contract.AnnotationTags)
		}
	}
	return nil
}
