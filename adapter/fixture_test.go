package adapter_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/adapter"
	"tsymbiote.dhouti.dev/controlplane"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
)

// TestMain keeps every tailscale thing in this process talking only to the
// local Headscale (no log upload, plain-HTTP DERP, no gateway probes), and
// removes the binaries the tests built.
func TestMain(m *testing.M) { os.Exit(headscaletest.Main(m)) }

// world is a tailnet with two real tailscaled nodes and an adapter attached
// to the first.
type world struct {
	hs       *headscaletest.Server
	a, b     *tailscaledtest.Daemon
	bIP      netip.Addr
	adapter  adapter.Ready
	stopAdpt func() // stops the adapter and waits for Run to return
	runErr   chan error
}

func mintKey(t testing.TB, hs *headscaletest.Server, ephemeral bool, tags ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := hs.AuthKey(ctx, headscaletest.KeyOptions{Tags: tags, Ephemeral: ephemeral})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// controlPlane is a control-plane client for hs, configured as the
// adapter's command configures its own: from the environment.
func controlPlane(t testing.TB, hs *headscaletest.Server) controlplane.Client {
	t.Helper()
	cfg, err := controlplane.ConfigFromEnv(hs.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := controlplane.New(logger.Discard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newWorld starts Headscale, two tailscaled (node-a, node-b) logged in with
// tag:test keys, and an adapter attached to node-a joined with a
// tag:tsymbiote-adapter key.
func newWorld(t testing.TB, adapterCfg func(*world, *adapter.Config)) *world {
	t.Helper()
	w := &world{hs: headscaletest.Start(t, headscaletest.Options{})}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	w.a = tailscaledtest.Start(t, "a")
	w.b = tailscaledtest.Start(t, "b")
	for _, d := range []*tailscaledtest.Daemon{w.a, w.b} {
		if err := d.Up(ctx, w.hs.URL, mintKey(t, w.hs, false, headscaletest.TagTest), "node-"+d.Name); err != nil {
			t.Fatal(err)
		}
	}
	stB, err := w.b.Client().StatusWithoutPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.bIP = stB.TailscaleIPs[0]
	waitPeer(t, ctx, w.a, "node-b")

	w.startAdapter(t, adapterCfg)
	return w
}

func waitPeer(t testing.TB, ctx context.Context, d *tailscaledtest.Daemon, host string) {
	t.Helper()
	for {
		st, err := d.Client().Status(ctx)
		if err == nil {
			for _, p := range st.Peer {
				if p.HostName == host {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never saw peer %s", d.Name, host)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (w *world) startAdapter(t testing.TB, mod func(*world, *adapter.Config)) {
	t.Helper()
	cfg := adapter.Config{
		AllowedTag:     adapter.DefaultAllowedTag,
		HostnamePrefix: adapter.DefaultHostnamePrefix,
		Hostname:       "adapter-a",
		Port:           adapter.DefaultPort,
		Sockets:        []string{w.a.Socket},
		AuthKey:        controlplane.Secret(mintKey(t, w.hs, false, headscaletest.TagAdapter)),
		ControlURL:     w.hs.URL,
		StateDir:       t.TempDir(),
		Logout:         true,
		ControlPlane:   controlPlane(t, w.hs),
	}
	if mod != nil {
		mod(w, &cfg)
	}
	readyc := make(chan adapter.Ready, 1)
	cfg.OnReady = func(r adapter.Ready) { readyc <- r }
	ctx, cancel := context.WithCancel(context.Background())
	w.runErr = make(chan error, 1)
	go func() { w.runErr <- adapter.Run(ctx, logger.WithPrefix(t.Logf, "adapter: "), cfg) }()
	stopped := false
	w.stopAdpt = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-w.runErr:
			if err != nil {
				t.Errorf("adapter.Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("adapter did not stop within 30s")
		}
	}
	t.Cleanup(w.stopAdpt)
	select {
	case w.adapter = <-readyc:
	case err := <-w.runErr:
		t.Fatalf("adapter.Run: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("adapter not ready within 90s")
	}
}

// caller joins a tsnet node with the given tags (none: a user-owned node)
// and returns a gRPC client to the adapter over the tailnet.
func (w *world) caller(t testing.TB, hostname string, tags ...string) (adapterv1.AdapterServiceClient, *tsnet.Server) {
	t.Helper()
	conn, ts := w.dial(t, hostname, tags...)
	return adapterv1.NewAdapterServiceClient(conn), ts
}

// dial is caller's connection.
func (w *world) dial(t testing.TB, hostname string, tags ...string) (*grpc.ClientConn, *tsnet.Server) {
	t.Helper()
	opts := headscaletest.NodeOptions{Hostname: hostname, Tags: tags}
	if len(tags) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		k, err := w.hs.UserAuthKey(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		opts.AuthKey = k
	}
	ts, _ := w.hs.NewNode(t, opts)
	target := net.JoinHostPort(w.adapter.TailscaleIPs[0].String(), adapter.DefaultPort)
	conn, err := grpc.NewClient("passthrough:///"+target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return ts.Dial(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, ts
}
