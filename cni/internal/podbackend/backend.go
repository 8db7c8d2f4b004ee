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
	"tailscale.com/types/logger"
	"tailscale.com/types/logid"
	"tailscale.com/types/preftype"
	"tailscale.com/util/eventbus"
	"tailscale.com/wgengine"
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
	// Socket is the path of the pod's LocalAPI socket.
	Socket string
	// NetMon is the daemon's one view of the host network, shared by every
	// backend (see Shared).
	NetMon *netmon.Monitor
	// OnAddrs is called (on its own goroutine) when the node's addresses
	// change after start.
	OnAddrs func([]netip.Prefix)
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
	// sockInfo identifies the socket file this backend made: a newer
	// sandbox of the same pod may replace it, and Close must not remove
	// that one.
	sockInfo os.FileInfo
	cancel   context.CancelFunc
	// ownNetMon is the backend's own monitor when the build cannot share
	// one; nil otherwise.
	ownNetMon *netmon.Monitor

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every notification
	state   ipn.State
	errMsg  string

	closeOnce sync.Once
}

// Start creates the TUN and the backend and starts logging in. It does not
// wait for the node to run; see WaitRunning.
func Start(logf logger.Logf, cfg Config) (_ *Backend, err error) {
	if cfg.NetMon == nil {
		return nil, errors.New("podbackend: no NetMon")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state dir: %w", err)
	}
	b := &Backend{logf: logf, cfg: cfg, changed: make(chan struct{})}
	var cleanups []func()
	defer func() {
		if err != nil {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
		}
	}()

	sys := tsd.NewSystem()
	b.sys = sys
	netMon := cfg.NetMon
	if buildfeatures.HasPortMapper {
		// magicsock's portmapper subscribes to its monitor's own bus
		// client, which works once per monitor: sharing one panics at the
		// second pod. Builds with -tags ts_omit_portmapper (the Makefile's)
		// share; others fall back to a monitor per pod. Pods have no use
		// for UPnP/NAT-PMP mappings on the node's router anyway.
		nm, err := netmon.New(sys.Bus.Get(), logf)
		if err != nil {
			return nil, fmt.Errorf("starting network monitor: %w", err)
		}
		netMon = nm
		cleanups = append(cleanups, func() { nm.Close() })
		b.ownNetMon = nm
	}
	sys.Set(netMon)
	// The shared monitor publishes on the daemon's bus; Relay forwards the
	// changes that matter to this backend's bus.
	b.bus = sys.Bus.Get().Client("tailscale-cni.netmon-relay")
	b.relay = eventbus.Publish[netmon.ChangeDelta](b.bus)
	cleanups = append(cleanups, func() { b.bus.Close() })

	dialer := &tsdial.Dialer{Logf: logf}
	dialer.SetBus(sys.Bus.Get())
	sys.Set(dialer)

	dev, devName, err := tstun.New(logf, cfg.Pod.TUN)
	if err != nil {
		return nil, fmt.Errorf("creating TUN %s: %w", cfg.Pod.TUN, err)
	}
	if devName != cfg.Pod.TUN {
		dev.Close()
		return nil, fmt.Errorf("TUN came up as %s, want %s", devName, cfg.Pod.TUN)
	}
	b.router = &podRouter{logf: logf, pod: cfg.Pod, onAddrs: cfg.OnAddrs}
	eng, err := wgengine.NewUserspaceEngine(logf, wgengine.Config{
		Tun:           dev,
		Router:        b.router,
		NetMon:        netMon,
		HealthTracker: sys.HealthTracker.Get(),
		Metrics:       sys.UserMetricsRegistry(),
		Dialer:        dialer,
		SetSubsystem:  sys.Set,
		ControlKnobs:  sys.ControlKnobs(),
		EventBus:      sys.Bus.Get(),
	})
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("starting engine: %w", err)
	}
	sys.Set(eng)
	cleanups = append(cleanups, eng.Close)
	sys.HealthTracker.Get().SetMetricsRegistry(sys.UserMetricsRegistry())

	st, err := store.New(logf, filepath.Join(cfg.StateDir, StateFile))
	if err != nil {
		return nil, fmt.Errorf("opening state store: %w", err)
	}
	sys.Set(st)
	sys.Tun.Get().Start()

	lb, err := ipnlocal.NewLocalBackend(logf, logid.PublicID{}, sys, controlclient.LoginDefault)
	if err != nil {
		return nil, fmt.Errorf("creating backend: %w", err)
	}
	b.lb = lb
	cleanups = append(cleanups, lb.Shutdown)
	lb.SetVarRoot(cfg.StateDir)

	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	cleanups = append(cleanups, cancel)
	watching := make(chan struct{})
	go lb.WatchNotifications(ctx, ipn.NotifyInitialState, func() { close(watching) }, b.onNotify)
	select {
	case <-watching:
	case <-time.After(10 * time.Second):
		return nil, errors.New("backend did not accept a watcher")
	}

	prefs := ipn.NewPrefs()
	prefs.ControlURL = cfg.ControlURL
	prefs.Hostname = cfg.Hostname
	prefs.WantRunning = true
	prefs.CorpDNS = false
	prefs.RouteAll = false
	prefs.NetfilterMode = preftype.NetfilterOff
	prefs.NoSNAT = true
	if err := lb.Start(ipn.Options{UpdatePrefs: prefs, AuthKey: cfg.AuthKey}); err != nil {
		return nil, fmt.Errorf("starting backend: %w", err)
	}
	if lb.State() == ipn.NeedsLogin {
		if cfg.AuthKey == "" {
			return nil, errors.New("stored identity needs a new login and no auth key was given")
		}
		// Start with an auth key leaves a fresh backend in NeedsLogin;
		// this is what makes it register.
		if err := lb.StartLoginInteractive(ctx); err != nil {
			return nil, fmt.Errorf("logging in: %w", err)
		}
	}
	if err := b.serveLocalAPI(); err != nil {
		return nil, err
	}
	return b, nil
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

func (b *Backend) serveLocalAPI() error {
	sock := b.cfg.Socket
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
	b.sockInfo, _ = os.Stat(sock)
	b.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	return nil
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

// State is the backend's state.
func (b *Backend) State() ipn.State { return b.lb.State() }

// LocalBackend is the pod's backend, for status queries.
func (b *Backend) LocalBackend() *ipnlocal.LocalBackend { return b.lb }

// Relay forwards a change of the host network to this backend.
func (b *Backend) Relay(cd netmon.ChangeDelta) { b.relay.Publish(cd) }

// Close shuts the node down: the engine closes the TUN, and the LocalAPI
// socket is removed. The node stays registered; the caller deletes it.
func (b *Backend) Close() {
	b.closeOnce.Do(func() {
		if b.srv != nil {
			b.srv.Close()
		}
		if st, err := os.Stat(b.cfg.Socket); err == nil && b.sockInfo != nil && os.SameFile(st, b.sockInfo) {
			os.Remove(b.cfg.Socket)
		}
		b.cancel()
		b.lb.Shutdown()
		b.bus.Close()
		if b.ownNetMon != nil {
			b.ownNetMon.Close()
		}
	})
}
