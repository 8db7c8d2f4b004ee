package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"tailscale.com/net/netns"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/controlplane/tsnode"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/proto/contract"
)

// Defaults of the adapter command's flags.
const (
	// DefaultAllowedTag is the tag callers carry by default: the WebUI's.
	DefaultAllowedTag     = contract.TagWebUI
	DefaultHostnamePrefix = "tsymbiote-adapter"
	DefaultPort           = contract.PortString
	DefaultSocket         = contract.DefaultSocket
)

// maxRequestBytes bounds a request message. The largest legitimate request
// is a few hundred bytes; anything bigger is refused by gRPC with
// ResourceExhausted before it is decoded.
const maxRequestBytes = 16 << 10

// Config configures Run.
type Config struct {
	AllowedTag     string // callers' nodes must carry it
	Dev            bool   // plain gRPC on localhost, no tsnet, no caller check
	DiscoverSocket bool   // find tailscaled's socket through /proc
	GenerateAuth   bool   // mint the adapter's own auth key through ControlPlane (no TS_AUTHKEY)
	Hostname       string // the adapter's tailnet hostname; derived when empty
	HostnamePrefix string
	Logout         bool     // register ephemeral and log out (and delete) on exit
	Port           string   // listen port; "0" picks a free one (tests)
	Sockets        []string // --socket values: sockets or directories of sockets

	AuthKey    controlplane.Secret // TS_AUTHKEY; empty means interactive login (or GenerateAuth)
	ControlURL string              // empty means Tailscale's default
	StateDir   string              // tsnet state; tsnet's default when empty

	// ControlPlane, if set, deletes the adapter's node on exit with Logout,
	// for keys that are not ephemeral (Headscale keeps logged-out nodes),
	// and mints its key with GenerateAuth.
	ControlPlane controlplane.Client

	ProcRoot  string      // for DiscoverSocket; /proc when empty
	TsnetLogf logger.Logf // tsnet's backend logs; discarded when nil

	// OnReady, if set, is called once the adapter is serving.
	OnReady func(Ready)
}

// Ready describes a serving adapter.
type Ready struct {
	Addr         net.Addr     // the listener's address
	TailscaleIPs []netip.Addr // empty in dev mode
	NodeID       string       // stable node ID; empty in dev mode
	Hostname     string
}

// Validate checks c and names the flag at fault.
func (c *Config) Validate() error {
	if !strings.HasPrefix(c.AllowedTag, "tag:") || len(c.AllowedTag) == len("tag:") || strings.ContainsAny(c.AllowedTag, " ,") {
		return fmt.Errorf("--allowed-tag %q: want a single ACL tag such as %s", c.AllowedTag, DefaultAllowedTag)
	}
	p, err := strconv.Atoi(c.Port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("--port %q: want a TCP port number", c.Port)
	}
	if err := tsnode.CheckHostnameFlags(c.Hostname, c.HostnamePrefix); err != nil {
		return err
	}
	if len(c.Sockets) == 0 && !c.DiscoverSocket {
		return errors.New("--socket: no tailscaled socket given")
	}
	if c.GenerateAuth && !c.AuthKey.IsZero() {
		return errors.New("minting an auth key: TS_AUTHKEY is set too")
	}
	if c.GenerateAuth && !c.Dev && c.ControlPlane == nil {
		return errors.New("minting an auth key: no control plane credentials (set TS_OAUTH_CLIENT_ID/TS_OAUTH_CLIENT_SECRET, TS_API_KEY or HEADSCALE_URL/HEADSCALE_API_KEY)")
	}
	if c.ControlURL != "" {
		if !strings.HasPrefix(c.ControlURL, "http://") && !strings.HasPrefix(c.ControlURL, "https://") {
			return fmt.Errorf("control URL %q: want an http or https URL", c.ControlURL)
		}
	}
	return nil
}

// hostname is --hostname, or the prefix and this machine's name.
func (c *Config) hostname() string {
	return tsnode.Hostname(c.Hostname, c.HostnamePrefix)
}

// Run serves until ctx ends, then shuts down (logging out if asked).
func Run(ctx context.Context, logf logger.Logf, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	var (
		targets *Targets
		err     error
	)
	if cfg.DiscoverSocket {
		p, err := DiscoverSocket(ctx, logf, cfg.ProcRoot, time.Second)
		if err != nil {
			return err
		}
		targets, err = NewDiscoveredTargets(logf, p, func() (string, error) {
			p, _, err := discoverOnce(procRootOr(cfg.ProcRoot))
			return p, err
		})
		if err != nil {
			return err
		}
	} else if targets, err = NewTargets(cfg.Sockets); err != nil {
		return err
	}
	for _, tg := range targets.List() {
		logf("target %q: %s", tg.Name, tg.Socket)
	}

	auth := &authorizer{logf: logf, tag: cfg.AllowedTag}
	var (
		ln    net.Listener
		srv   *tsnet.Server
		ready = Ready{Hostname: cfg.hostname()}
	)
	if cfg.Dev {
		ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", cfg.Port))
		if err != nil {
			return fmt.Errorf("--dev listen: %w", err)
		}
		logf("dev mode: plain gRPC on %s, no tailnet, no caller checks", ln.Addr())
	} else {
		srv, err = startTsnet(ctx, logf, cfg, ready.Hostname)
		if err != nil {
			return err
		}
		defer func() { shutdownTsnet(logf, cfg, srv) }()
		lc, err := srv.LocalClient()
		if err != nil {
			return err
		}
		auth.whois = lc
		st, err := lc.StatusWithoutPeers(ctx)
		if err != nil {
			return fmt.Errorf("tsnet status: %w", err)
		}
		ready.TailscaleIPs = st.TailscaleIPs
		if st.Self != nil {
			ready.NodeID = string(st.Self.ID)
		}
		ln, err = srv.Listen("tcp", ":"+cfg.Port)
		if err != nil {
			return fmt.Errorf("tailnet listen on port %s: %w", cfg.Port, err)
		}
		logf("serving on the tailnet as %s (%v) port %s; callers need %s", ready.Hostname, ready.TailscaleIPs, cfg.Port, cfg.AllowedTag)
	}
	ready.Addr = ln.Addr()
	split := newSplitListener(ln)
	defer split.Close()

	m := newMetrics()
	gs := grpc.NewServer(
		grpc.MaxRecvMsgSize(maxRequestBytes),
		grpc.MaxConcurrentStreams(256),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(m.unary, auth.unary),
		grpc.ChainStreamInterceptor(m.stream, auth.stream),
	)
	adapterv1.RegisterAdapterServiceServer(gs, NewService(logf, targets))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	// Reflection makes the service self-describing to tools (grpcurl);
	// it sits behind the same caller check as everything else.
	reflection.Register(gs)

	hsrv := &http.Server{
		Handler:           httpHandler(auth, targets, m),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
	}
	err = tsnode.Serve(ctx, func() {
		if cfg.OnReady != nil {
			cfg.OnReady(ready)
		}
	}, func() error { return gs.Serve(split.grpc) }, func() error { return hsrv.Serve(split.http) })
	logf("shutting down")
	hs.Shutdown()
	split.Close()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		gs.Stop() // streams (logs, bus events) never end by themselves
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hsrv.Shutdown(sctx)
	return err
}

func startTsnet(ctx context.Context, logf logger.Logf, cfg Config, hostname string) (*tsnet.Server, error) {
	// The adapter's node is userspace: no TUN and no routes of its own for
	// its sockets to bypass. Left on, netns would, without CAP_NET_ADMIN for
	// its bypass mark, bind every socket to the default route's interface,
	// and in a hostNetwork pod (tailscale-cni's per-node adapter) a control
	// server on another of the node's addresses is then never reached.
	netns.SetEnabled(false)
	key := cfg.AuthKey
	if cfg.GenerateAuth {
		var err error
		if key, err = mintAuthKey(ctx, logf, cfg, hostname); err != nil {
			return nil, err
		}
	}
	return tsnode.Join(ctx, logf, tsnode.Options{
		Dir:         cfg.StateDir,
		Hostname:    hostname,
		ControlURL:  cfg.ControlURL,
		AuthKey:     key,
		Ephemeral:   cfg.Logout,
		BackendLogf: cfg.TsnetLogf,
		Tag:         contract.TagAdapter,
	})
}

// mintAuthKey mints a single-use, pre-authorized tag:tsymbiote-adapter key
// for this start, so that an adapter run by a chart (one per node, no
// operator to hand it a key) needs only the control-plane credentials. It
// is ephemeral like the node when the adapter logs out on exit, and short:
// it is used at once or never.
func mintAuthKey(ctx context.Context, logf logger.Logf, cfg Config, hostname string) (controlplane.Secret, error) {
	k, err := cfg.ControlPlane.CreateAuthKey(ctx, controlplane.AuthKeyRequest{
		Tags:          []string{contract.TagAdapter},
		Ephemeral:     cfg.Logout,
		Preauthorized: true,
		Expiry:        10 * time.Minute,
		Description:   "tsymbiote adapter " + hostname,
	})
	if err != nil {
		return "", fmt.Errorf("minting a %s auth key: %w", contract.TagAdapter, err)
	}
	logf("minted a %s auth key (%s)", contract.TagAdapter, k.ID)
	return k.Key, nil
}

// shutdownTsnet leaves the tailnet when asked (--logout), then closes.
func shutdownTsnet(logf logger.Logf, cfg Config, srv *tsnet.Server) {
	defer srv.Close()
	if cfg.Logout {
		tsnode.Leave(logf, srv, cfg.ControlPlane)
	}
}

// httpHandler serves /healthz (open: it says only whether targets answer)
// and /metrics (same caller check as gRPC).
func httpHandler(auth *authorizer, targets *Targets, m *metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		type tstat struct {
			Name      string `json:"name"`
			Reachable bool   `json:"reachable"`
			Error     string `json:"error,omitempty"`
		}
		var out struct {
			OK      bool    `json:"ok"`
			Targets []tstat `json:"targets"`
		}
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		for _, tg := range targets.List() {
			t := tstat{Name: tg.Name}
			if err := targets.ReachableError(ctx, tg); err != nil {
				t.Error = err.Error()
			} else {
				t.Reachable = true
				out.OK = true
			}
			out.Targets = append(out.Targets, t)
		}
		w.Header().Set("Content-Type", "application/json")
		if !out.OK {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	prom := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if auth.whois != nil {
			addr, err := net.ResolveTCPAddr("tcp", r.RemoteAddr)
			if err != nil || auth.checkAddr(r.Context(), "/metrics", addr) != nil {
				http.Error(w, "forbidden: caller lacks "+auth.tag, http.StatusForbidden)
				return
			}
		}
		prom.ServeHTTP(w, r)
	})
	return mux
}
