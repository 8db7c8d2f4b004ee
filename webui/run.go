package webui

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/controlplane/tsnode"
	"tsymbiote.dhouti.dev/proto/contract"
)

// Run serves until ctx ends, then shuts down (logging out if asked).
//
// Without --dev the WebUI is a tsnet node: it serves the browser on the
// tailnet and calls adapters over it. With --dev it serves plain HTTP on
// 127.0.0.1, and still joins the tailnet (when it has a key or can mint
// one) for its outbound calls, because adapters listen only on the tailnet
// and admit only tag:tsymbiote-webui nodes. With --dev and --adapter it
// does not join at all and dials the given addresses directly (adapters
// run with --dev).
func Run(ctx context.Context, logf logger.Logf, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	hostname := cfg.hostname()
	// The probes answer from the start, so that the kubelet's liveness
	// check passes while the WebUI joins the tailnet.
	var probes *probeServer
	if cfg.HealthAddr != "" {
		var err error
		if probes, err = startProbes(logf, cfg.HealthAddr); err != nil {
			return err
		}
		defer probes.stop()
	}
	var (
		srv   *tsnet.Server
		dial  DialFunc
		whois whoIser
		ready = Ready{Hostname: hostname}
	)
	if cfg.needsTailnet() {
		var err error
		srv, err = startTsnet(ctx, logf, &cfg, hostname)
		if err != nil {
			return err
		}
		defer shutdownTsnet(logf, &cfg, srv)
		lc, err := srv.LocalClient()
		if err != nil {
			return err
		}
		if st, err := lc.StatusWithoutPeers(ctx); err == nil && st.Self != nil {
			ready.NodeID = string(st.Self.ID)
			ready.TailscaleIPs = st.TailscaleIPs
			logf("joined the tailnet as %s (%s, %v)", hostname, st.Self.ID, st.TailscaleIPs)
		}
		dial = srv.Dial
		if !cfg.Dev {
			whois = lc
		}
	} else {
		var d net.Dialer
		dial = d.DialContext
	}

	var disc Discoverer
	if len(cfg.Adapters) > 0 {
		disc = staticDiscoverer(cfg.Adapters)
	} else {
		disc = &controlPlaneDiscoverer{cp: cfg.ControlPlane, port: cfg.AdapterPort}
	}

	var (
		ln  net.Listener
		err error
	)
	if cfg.Dev {
		ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", cfg.Port))
		if err != nil {
			return fmt.Errorf("--dev listen: %w", err)
		}
		ready.URL = "http://" + ln.Addr().String()
		if len(cfg.AllowedUsers) > 0 {
			logf("--dev: serving on localhost, where callers have no tailnet identity; --allowed-users is not enforced")
		}
	} else {
		ln, err = srv.Listen("tcp", ":"+cfg.Port)
		if err != nil {
			return fmt.Errorf("tailnet listen on port %s: %w", cfg.Port, err)
		}
		ready.URL = fmt.Sprintf("http://%s:%s", hostname, cfg.Port)
	}
	ready.Addr = ln.Addr()
	defer ln.Close()

	m := newMetrics()
	reg := NewRegistry(logf, disc, dial, m, cfg.CallTimeout)
	defer reg.Close()
	if err := reg.Refresh(ctx); err != nil {
		// Not fatal: the control plane may come back; /healthz says so.
		logf("finding adapters: %v", err)
	}
	base, cancelBase := context.WithCancel(ctx)
	defer cancelBase()
	every := cfg.RefreshInterval
	if every <= 0 {
		every = 15 * time.Second
	}
	go reg.Loop(base, every)

	timeout := cfg.CallTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	s := NewServer(base, logf, reg, cfg.ControlPlane, &gate{whois: whois, allowed: cfg.AllowedUsers}, m, timeout)
	if cfg.Access {
		store := cfg.AccessStore
		if store == nil {
			kc, err := kubeConfig()
			if err != nil {
				return err
			}
			if store, err = NewKubeAccessStore(kc); err != nil {
				return fmt.Errorf("--access: %w", err)
			}
			logf("access requests on: access.tsymbiote.dhouti.dev resources at %s", kc.Host)
		}
		s.enableAccess(store, nil)
	}
	if !s.hasAsset {
		logf("frontend not built: serving a placeholder page at / (run npm run build in webui/frontend before go build)")
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	logf("serving the WebUI on %s", ready.URL)
	err = tsnode.Serve(ctx, func() {
		probes.setReady()
		if cfg.OnReady != nil {
			cfg.OnReady(ready)
		}
	}, func() error { return hs.Serve(ln) })
	logf("shutting down")
	s.fanouts.cancelAll()
	cancelBase() // ends log streams and SSE loops waiting on fan-outs
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := hs.Shutdown(sctx); serr != nil {
		logf("http shutdown: %v", serr)
	}
	return err
}

func startTsnet(ctx context.Context, logf logger.Logf, cfg *Config, hostname string) (*tsnet.Server, error) {
	key := cfg.AuthKey
	if cfg.GenerateAuth {
		k, err := cfg.ControlPlane.CreateAuthKey(ctx, controlplane.AuthKeyRequest{
			Tags:          []string{contract.TagWebUI},
			Ephemeral:     true,
			Preauthorized: true,
			Expiry:        10 * time.Minute,
			Description:   "tsymbiote webui " + hostname,
		})
		if err != nil {
			return nil, fmt.Errorf("--generate-auth: minting a %s key: %w", contract.TagWebUI, err)
		}
		key = k.Key
		logf("minted an ephemeral %s auth key (%s)", contract.TagWebUI, k.ID)
	}
	dir := cfg.StateDir
	if dir == "" && cfg.Logout {
		// An ephemeral node that logs out on exit has nothing worth
		// keeping across runs.
		d, err := os.MkdirTemp("", "tsymbiote-webui-")
		if err != nil {
			return nil, err
		}
		dir = d
		cfg.StateDir = d
		cfg.removeStateDir = true
	}
	srv, err := tsnode.Join(ctx, logf, tsnode.Options{
		Dir:         dir,
		Hostname:    hostname,
		ControlURL:  cfg.ControlURL,
		AuthKey:     key,
		Ephemeral:   cfg.Logout,
		BackendLogf: cfg.TsnetLogf,
		Tag:         contract.TagWebUI,
	})
	if err != nil {
		if cfg.removeStateDir {
			os.RemoveAll(dir)
		}
		return nil, err
	}
	return srv, nil
}

// shutdownTsnet leaves the tailnet when asked (--logout), closes the node
// and removes a state directory it made up.
func shutdownTsnet(logf logger.Logf, cfg *Config, srv *tsnet.Server) {
	defer func() {
		srv.Close()
		if cfg.removeStateDir {
			os.RemoveAll(cfg.StateDir)
		}
	}()
	if cfg.Logout {
		tsnode.Leave(logf, srv, cfg.ControlPlane)
	}
}
