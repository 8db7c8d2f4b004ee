// Package podbackend runs one pod's tailnet node inside the daemon: a
// LocalBackend (the core of tailscaled) with a kernel TUN in the host's
// netns, a router that only touches the pod's own routing table, a FileStore
// that keeps the node's identity across daemon restarts, and the pod's
// LocalAPI on its own unix socket.
package podbackend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"tailscale.com/control/controlclient"
	"tailscale.com/feature/buildfeatures"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnauth"
	"tailscale.com/ipn/ipnlocal"
	"tailscale.com/ipn/localapi"
	"tailscale.com/ipn/store"
	"tailscale.com/net/netmon"
	"tailscale.com/net/tsdial"
	"tailscale.com/net/tstun"
	"tailscale.com/tsd"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
	"tailscale.com/types/logid"
	"tailscale.com/types/preftype"
	"tailscale.com/util/eventbus"
	"tailscale.com/wgengine"
	"tailscale.com/wgengine/netstack"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
)

// StateFile is the FileStore's name inside a pod's state dir.
const StateFile = "tailscaled.state"

// Config describes one pod's node.
type Config struct {
	Pod        podnet.Pod
	Hostname   string
	ControlURL string
	// AuthKey registers a new node. Empty when recovering a node whose
	// identity is already in StateDir.
	AuthKey string
	// StateDir holds the FileStore and the backend's var root.
	StateDir string
	// Socket is the path of the pod's LocalAPI socket. Empty serves none
	// until ServeSocket: a pool node has no pod yet (see daemon's pool).
	Socket string
	// NetMon is the daemon's one view of the host network, shared by every
	// backend (see Shared).
	NetMon *netmon.Monitor
	// OnAddrs is called (on its own goroutine) when the node's addresses
	// change after start.
	OnAddrs func([]netip.Prefix)
	// MagicDNS turns on the backend's DNS resolver (prefs.CorpDNS) so that
	// QueryDNS answers tailnet names. The engine's OS configurator is the
	// no-op one: nothing on the host or in the pod is rewritten.
	MagicDNS bool
	// Netstack starts a gVisor netstack beside the kernel TUN, as
	// tailscaled does in TUN mode, where it serves 100.100.100.100 to the
	// pod through ts0. Off in the daemon (see the README's MagicDNS
	// section); the benchmark turns it on to measure what that costs.
	Netstack bool
}

// Backend is a running pod node.
type Backend struct {
	logf   logger.Logf
	cfg    Config
	sys    *tsd.System
	lb     *ipnlocal.LocalBackend
	router *podRouter
	bus    *eventbus.Client
	relay  *eventbus.Publisher[netmon.ChangeDelta]
	srv    *http.Server
	ln     net.Listener
	// sock is the socket being served ("" for none) and sockInfo
	// identifies the file this backend made: a newer sandbox of the same
	// pod may replace it, and Close must not remove that one. Both are
	// guarded by mu.
	sock     string
	sockInfo os.FileInfo
	cancel   context.CancelFunc
	// ownNetMon is the backend's own monitor when the build cannot share
	// one; nil otherwise.
	ownNetMon *netmon.Monitor
	// ns is the pod's netstack when Config.Netstack; nil otherwise.
	ns *netstack.Impl
	// direct is the pod's TUN as the engine sees it (see datapath.go).
	direct *directTUN

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every notification
	state   ipn.State
	errMsg  string

	closeOnce sync.Once

	// cleanups undo Start's phases if a later one fails; Start's own
	// goroutine is the only one to touch them.
	cleanups []func()
}

// Start creates the TUN and the backend and starts logging in. It does not
// wait for the node to run; see WaitRunning. Its phases run in order, and
// when one fails, what the earlier ones started is stopped in reverse.
func Start(logf logger.Logf, cfg Config) (_ *Backend, err error) {
	if cfg.NetMon == nil {
		return nil, errors.New("podbackend: no NetMon")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state dir: %w", err)
	}
	b := &Backend{logf: logf, cfg: cfg, sys: tsd.NewSystem(), changed: make(chan struct{})}
	defer func() {
		if err != nil {
			b.undo()
		}
	}()
	netMon, err := b.joinNetMon()
	if err != nil {
		return nil, err
	}
	if err := b.startEngine(netMon); err != nil {
		return nil, err
	}
	if err := b.openStore(); err != nil {
		return nil, err
	}
	if err := b.startNetstack(); err != nil {
		return nil, err
	}
	if err := b.newLocalBackend(); err != nil {
		return nil, err
	}
	if b.ns != nil {
		if err := b.ns.Start(b.lb); err != nil {
			return nil, fmt.Errorf("starting netstack: %w", err)
		}
	}
	ctx, err := b.watchNotifications()
	if err != nil {
		return nil, err
	}
	if err := b.login(ctx); err != nil {
		return nil, err
	}
	if b.cfg.Socket != "" {
		if err := b.ServeSocket(b.cfg.Socket); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// onFailure registers f to run, last in first out, if Start fails.
func (b *Backend) onFailure(f func()) { b.cleanups = append(b.cleanups, f) }

// undo stops what Start's phases started, newest first.
func (b *Backend) undo() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
}

// joinNetMon gives the node the daemon's shared view of the host network,
// or a monitor of its own where sharing cannot work, and the relay by which
// the daemon forwards the changes that matter to it.
func (b *Backend) joinNetMon() (*netmon.Monitor, error) {
	sys := b.sys
	netMon := b.cfg.NetMon
	if buildfeatures.HasPortMapper {
		// magicsock's portmapper subscribes to its monitor's own bus
		// client, which works once per monitor: sharing one panics at the
		// second pod. Builds with -tags ts_omit_portmapper (the Makefile's)
		// share; others fall back to a monitor per pod. Pods have no use
		// for UPnP/NAT-PMP mappings on the node's router anyway.
		nm, err := netmon.New(sys.Bus.Get(), b.logf)
		if err != nil {
			return nil, fmt.Errorf("starting network monitor: %w", err)
		}
		netMon = nm
		b.onFailure(func() { nm.Close() })
		b.ownNetMon = nm
	}
	sys.Set(netMon)
	// The shared monitor publishes on the daemon's bus; Relay forwards the
	// changes that matter to this backend's bus.
	b.bus = sys.Bus.Get().Client("tailscale-cni.netmon-relay")
	b.relay = eventbus.Publish[netmon.ChangeDelta](b.bus)
	b.onFailure(func() { b.bus.Close() })
	return netMon, nil
}

// startEngine creates the pod's TUN, under the name the daemon's sweep
// knows, and the WireGuard engine on it, with a router that only touches
// the pod's own table.
func (b *Backend) startEngine(netMon *netmon.Monitor) error {
	sys, logf := b.sys, b.logf
	dialer := &tsdial.Dialer{Logf: logf}
	dialer.SetBus(sys.Bus.Get())
	sys.Set(dialer)

	dev, devName, err := tstun.New(logf, b.cfg.Pod.TUN)
	if err != nil {
		return fmt.Errorf("creating TUN %s: %w", b.cfg.Pod.TUN, err)
	}
	if devName != b.cfg.Pod.TUN {
		dev.Close()
		return fmt.Errorf("TUN came up as %s, want %s", devName, b.cfg.Pod.TUN)
	}
	b.router = &podRouter{logf: logf, pod: b.cfg.Pod, onAddrs: b.directAddrs(b.cfg.OnAddrs)}
	eng, err := wgengine.NewUserspaceEngine(logf, wgengine.Config{
		Tun:           b.useDirect(dev),
		Router:        b.router,
		NetMon:        netMon,
		HealthTracker: sys.HealthTracker.Get(),
		Metrics:       sys.UserMetricsRegistry(),
		Dialer:        dialer,
		SetSubsystem:  sys.Set,
		ControlKnobs:  sys.ControlKnobs(),
		EventBus:      sys.Bus.Get(),
		ListenPort:    loadListenPort(b.cfg.StateDir),
		ForceDiscoKey: discoKey(logf, b.cfg.StateDir),
	})
	if err != nil {
		dev.Close()
		return fmt.Errorf("starting engine: %w", err)
	}
	sys.Set(eng)
	saveListenPort(logf, b.cfg.StateDir, sys.MagicSock.Get().LocalPort())
	b.onFailure(eng.Close)
	sys.HealthTracker.Get().SetMetricsRegistry(sys.UserMetricsRegistry())
	return nil
}

// startNetstack creates the pod's netstack when Config.Netstack, as
// tailscaled's newNetstack does: only for 100.100.100.100, not for the
// node's own addresses or subnets, which the kernel handles.
func (b *Backend) startNetstack() error {
	if !b.cfg.Netstack {
		return nil
	}
	sys := b.sys
	ns, err := netstack.Create(b.logf, sys.Tun.Get(), sys.Engine.Get(), sys.MagicSock.Get(), sys.Dialer.Get(), sys.DNSManager.Get(), sys.ProxyMapper())
	if err != nil {
		return fmt.Errorf("creating netstack: %w", err)
	}
	sys.Set(ns)
	ns.ProcessLocalIPs, ns.ProcessSubnets = false, false
	b.ns = ns
	b.onFailure(func() { ns.Close() })
	return nil
}

// openStore opens the FileStore that keeps the node's identity (keys,
// profile) across daemon restarts.
func (b *Backend) openStore() error {
	st, err := store.New(b.logf, filepath.Join(b.cfg.StateDir, StateFile))
	if err != nil {
		return fmt.Errorf("opening state store: %w", err)
	}
	b.sys.Set(st)
	return nil
}

// newLocalBackend starts the TUN's packet processing and creates the
// LocalBackend, tailscaled's core, on everything set up so far.
func (b *Backend) newLocalBackend() error {
	b.sys.Tun.Get().Start()
	lb, err := ipnlocal.NewLocalBackend(b.logf, logid.PublicID{}, b.sys, controlclient.LoginDefault)
	if err != nil {
		return fmt.Errorf("creating backend: %w", err)
	}
	b.lb = lb
	b.direct.attach(lbNode{lb: lb, w: b.sys.Tun.Get()})
	b.onFailure(lb.Shutdown)
	lb.SetVarRoot(b.cfg.StateDir)
	return nil
}

// watchNotifications follows the backend's state (for WaitRunning) from
// before it starts, so that no transition is missed. The context it
// returns lives as long as the backend.
func (b *Backend) watchNotifications() (context.Context, error) {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.onFailure(cancel)
	watching := make(chan struct{})
	go b.lb.WatchNotifications(ctx, ipn.NotifyInitialState, func() { close(watching) }, b.onNotify)
	select {
	case <-watching:
		return ctx, nil
	case <-time.After(10 * time.Second):
		return nil, errors.New("backend did not accept a watcher")
	}
}

// login starts the backend with the pod's prefs: no DNS, routes, netfilter
// or SNAT of its own, since the daemon wires the pod. With an auth key it
// registers a new node; without, it comes back with the stored identity.
func (b *Backend) login(ctx context.Context) error {
	prefs := ipn.NewPrefs()
	prefs.ControlURL = b.cfg.ControlURL
	prefs.Hostname = b.cfg.Hostname
	prefs.WantRunning = true
	// CorpDNS fills the engine's resolver with the tailnet's names; the
	// engine's OS configurator is wgengine's no-op one, so the host's and
	// the pod's resolv.conf stay as they are (see QueryDNS).
	prefs.CorpDNS = b.cfg.MagicDNS
	prefs.RouteAll = false
	prefs.NetfilterMode = preftype.NetfilterOff
	prefs.NoSNAT = true
	if err := b.lb.Start(ipn.Options{UpdatePrefs: prefs, AuthKey: b.cfg.AuthKey}); err != nil {
		return fmt.Errorf("starting backend: %w", err)
	}
	if b.lb.State() != ipn.NeedsLogin {
		return nil
	}
	if b.cfg.AuthKey == "" {
		return errors.New("stored identity needs a new login and no auth key was given")
	}
	// Start with an auth key leaves a fresh backend in NeedsLogin; this is
	// what makes it register.
	if err := b.lb.StartLoginInteractive(ctx); err != nil {
		return fmt.Errorf("logging in: %w", err)
	}
	return nil
}

func (b *Backend) onNotify(n *ipn.Notify) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n.State != nil {
		b.state = *n.State
	}
	if n.ErrMessage != nil {
		b.errMsg = *n.ErrMessage
	}
	close(b.changed)
	b.changed = make(chan struct{})
	return true
}

// ServeSocket serves the node's LocalAPI on the unix socket sock, last in
// Start (once the socket is there, the stock CLI and an adapter can use
// the node), or later for a node started without a pod (the daemon's
// pool hands it to one). It serves one socket: a second call fails.
func (b *Backend) ServeSocket(sock string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		return fmt.Errorf("already serving %s", b.sock)
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return fmt.Errorf("creating socket dir: %w", err)
	}
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", sock, err)
	}
	// Only root may talk to a pod's node: the socket's directory is 0700.
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("restricting %s: %w", sock, err)
	}
	h := localapi.NewHandler(localapi.HandlerConfig{
		Actor:    ipnauth.Self,
		Backend:  b.lb,
		Logf:     logger.Discard,
		EventBus: b.sys.Bus.Get(),
	})
	h.PermitRead, h.PermitWrite = true, true
	b.ln = ln
	b.sock = sock
	b.sockInfo, _ = os.Stat(sock)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	b.srv = srv
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// SetHostname changes the node's hostname, as `tailscale set --hostname`
// does: the client sends it to the control plane with its next map
// request, and a control plane that derived the node's name from its old
// hostname (Headscale, Tailscale unless an admin renamed it) renames it.
func (b *Backend) SetHostname(name string) error {
	_, err := b.lb.EditPrefs(&ipn.MaskedPrefs{Prefs: ipn.Prefs{Hostname: name}, HostnameSet: true})
	if err != nil {
		return fmt.Errorf("setting hostname %q: %w", name, err)
	}
	return nil
}

// ControlName is the node's name as the control plane last sent it (its
// self node's MagicDNS name, with a trailing dot), or "" before the first
// netmap.
func (b *Backend) ControlName() string {
	nm := b.lb.NetMapNoPeers()
	if nm == nil || !nm.SelfNode.Valid() {
		return ""
	}
	return nm.SelfNode.Name()
}

// Running is what WaitRunning reports about a node that came up.
type Running struct {
	NodeID string         // stable node ID, as the control plane names it
	Addrs  []netip.Prefix // tailnet addresses, IPv4 first
}

// ErrLoginFailed wraps an error the control plane gave while logging in.
var ErrLoginFailed = errors.New("login failed")

// WaitRunning waits until the node is Running with its addresses.
func (b *Backend) WaitRunning(ctx context.Context) (*Running, error) {
	return b.wait(ctx, true)
}

// WaitAddresses waits until the node is registered and has its addresses
// (Starting or Running). Running also needs a home DERP, which comes after
// the first netcheck (seconds); the pod can be wired before that.
func (b *Backend) WaitAddresses(ctx context.Context) (*Running, error) {
	return b.wait(ctx, false)
}

func (b *Backend) wait(ctx context.Context, running bool) (*Running, error) {
	for {
		b.mu.Lock()
		ch, state, msg := b.changed, b.state, b.errMsg
		b.mu.Unlock()
		if state == ipn.Running || (!running && state == ipn.Starting) {
			if nm := b.lb.NetMapNoPeers(); nm != nil && nm.SelfNode.Valid() && nm.GetAddresses().Len() > 0 {
				r := &Running{NodeID: string(nm.SelfNode.StableID())}
				for _, a := range nm.GetAddresses().All() {
					if a.Addr().Is4() {
						r.Addrs = append([]netip.Prefix{a}, r.Addrs...)
					} else {
						r.Addrs = append(r.Addrs, a)
					}
				}
				return r, nil
			}
		}
		if msg != "" && state != ipn.Running {
			return nil, fmt.Errorf("%w: %s", ErrLoginFailed, msg)
		}
		select {
		case <-ch:
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return nil, fmt.Errorf("node not running (state %v): %w", state, ctx.Err())
		}
	}
}

// WaitPublished waits, at most limit, until the control plane's view of
// the node (its self node in the netmap) carries the node's endpoints and
// home DERP, and reports whether it does. A peer that learns of the pod
// before then sends its first WireGuard handshake nowhere and retries it
// only 5 s later; one that learns of it after can reach it at once.
func (b *Backend) WaitPublished(ctx context.Context, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		if nm := b.lb.NetMapNoPeers(); nm != nil && nm.SelfNode.Valid() &&
			nm.SelfNode.Endpoints().Len() > 0 && nm.SelfNode.HomeDERP() != 0 {
			return true
		}
		b.mu.Lock()
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(20 * time.Millisecond):
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// QueryDNS answers a wire-format DNS query with the node's own MagicDNS
// resolver: the tailnet's names from its netmap, NXDOMAIN under the
// tailnet's own domains. Only names under MagicDNSSuffix belong here.
func (b *Backend) QueryDNS(ctx context.Context, q []byte, family string, from netip.AddrPort) ([]byte, error) {
	m, ok := b.sys.DNSManager.GetOK()
	if !ok {
		return nil, errors.New("no DNS manager")
	}
	return m.Query(ctx, q, family, from)
}

// MagicDNSSuffix is the tailnet's MagicDNS domain ("tail1234.ts.net"),
// or "" before the first netmap or when MagicDNS is off in the tailnet.
func (b *Backend) MagicDNSSuffix() string {
	nm := b.lb.NetMapNoPeers()
	if nm == nil || !b.cfg.MagicDNS {
		return ""
	}
	return nm.MagicDNSSuffix()
}

// State is the backend's state.
func (b *Backend) State() ipn.State { return b.lb.State() }

// NodeKey is the node's public key; zero before it has one.
func (b *Backend) NodeKey() key.NodePublic { return b.lb.NodeKey() }

// Handshake is what a node's WireGuard device knows of its session with
// one peer.
type Handshake struct {
	Known bool      // the device has the peer (it created it on traffic)
	Sent  bool      // the node sent the peer something: at least a handshake
	Heard bool      // the node received something from the peer
	Last  time.Time // the last completed handshake; zero for none
}

// Lost reports whether the node sent the peer a handshake that went
// nowhere: sent, nothing heard, and none completed since since.
func (h Handshake) Lost(since time.Time) bool {
	return h.Known && h.Sent && !h.Heard && h.Last.Before(since)
}

// Handshake is the node's WireGuard state with peer. Safe for concurrent
// use.
func (b *Backend) Handshake(peer key.NodePublic) Handshake {
	e, ok := b.sys.Engine.GetOK()
	if !ok || peer.IsZero() {
		return Handshake{}
	}
	wp, ok := e.PeerByKey(peer)
	if !ok {
		return Handshake{}
	}
	return Handshake{Known: true, Sent: wp.TxBytes() > 0, Heard: wp.RxBytes() > 0, Last: wp.LastHandshake()}
}

// ResetHandshake drops the node's WireGuard state for peer: the engine
// re-creates the peer on the node's next packet to it, with a handshake
// sent at once instead of at wireguard-go's next retry (REKEY_TIMEOUT,
// 5 s, after the last). Only for a handshake that was Lost: dropping the
// responder's half of one its initiator took as done would leave the
// initiator sending into a dead session for 15 s. Safe for concurrent
// use.
func (b *Backend) ResetHandshake(peer key.NodePublic) {
	if e, ok := b.sys.Engine.GetOK(); ok && !peer.IsZero() {
		e.ResetDevicePeer(peer)
	}
}

// LocalBackend is the pod's backend, for status queries.
func (b *Backend) LocalBackend() *ipnlocal.LocalBackend { return b.lb }

// Relay forwards a change of the host network to this backend.
func (b *Backend) Relay(cd netmon.ChangeDelta) { b.relay.Publish(cd) }

// Close shuts the node down: the engine closes the TUN, and the LocalAPI
// socket is removed. The node stays registered; the caller deletes it.
func (b *Backend) Close() {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		srv, sock, info := b.srv, b.sock, b.sockInfo
		b.mu.Unlock()
		if srv != nil {
			srv.Close()
		}
		if st, err := os.Stat(sock); err == nil && info != nil && os.SameFile(st, info) {
			os.Remove(sock)
		}
		b.cancel()
		b.lb.Shutdown()
		if b.ns != nil {
			b.ns.Close()
		}
		b.bus.Close()
		if b.ownNetMon != nil {
			b.ownNetMon.Close()
		}
	})
}
