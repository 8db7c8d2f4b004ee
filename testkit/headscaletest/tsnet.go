package headscaletest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"tailscale.com/envknob"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/testkit"
)

var offlineOnce sync.Once

// OfflineClean sets the process-wide knobs that keep tailscale code in this
// process talking to nothing but the local control server: no log upload,
// DERP over plain HTTP, which is what Headscale's embedded DERP speaks, and no
// UPnP/NAT-PMP/PCP probes of the machine's gateway.
// The DERP map itself comes from Headscale and lists only the embedded region.
func OfflineClean() {
	offlineOnce.Do(func() {
		envknob.SetNoLogsNoSupport()
		envknob.Setenv("TS_DEBUG_USE_DERP_HTTP", "1")
		envknob.Setenv("TS_DISABLE_PORTMAPPER", "1")
	})
}

// Main is testkit.Main for packages whose tests run tailscale code in the
// test process (tsnet nodes, the adapter, the WebUI): that code is made
// offline-clean (OfflineClean) before any test runs.
//
//	func TestMain(m *testing.M) { os.Exit(headscaletest.Main(m)) }
func Main(m *testing.M) int {
	OfflineClean()
	return testkit.Main(m)
}

// NodeOptions configure NewNode.
type NodeOptions struct {
	Hostname  string
	Tags      []string    // tags for the auth key NewNode mints
	AuthKey   string      // use this key instead of minting one
	Ephemeral bool        // register as an ephemeral node
	Logf      logger.Logf // the node's logs; discarded when nil
}

// NewNode joins a tsnet node to s, waits until it is running, and closes it
// when t ends. Without an AuthKey it mints a preauthorized single-use key
// with opts.Tags.
func (s *Server) NewNode(t testing.TB, opts NodeOptions) (*tsnet.Server, *ipnstate.Status) {
	t.Helper()
	OfflineClean()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key := opts.AuthKey
	if key == "" {
		k, err := s.AuthKey(ctx, KeyOptions{Tags: opts.Tags, Ephemeral: opts.Ephemeral})
		if err != nil {
			t.Fatalf("minting a key for %s: %v", opts.Hostname, err)
		}
		key = k
	}
	logf := opts.Logf
	if logf == nil {
		logf = logger.Discard
	}
	ts := &tsnet.Server{
		Dir:        t.TempDir(),
		Hostname:   opts.Hostname,
		ControlURL: s.URL,
		AuthKey:    key,
		Ephemeral:  opts.Ephemeral,
		Logf:       logf,
		UserLogf:   logf,
	}
	t.Cleanup(func() { ts.Close() })
	st, err := ts.Up(ctx)
	if err != nil {
		t.Fatalf("tsnet node %s: %v", opts.Hostname, err)
	}
	return ts, st
}

// WaitForPeer waits until ts sees a peer with the given hostname online, and
// returns its status.
func WaitForPeer(ctx context.Context, ts *tsnet.Server, hostname string) (*ipnstate.PeerStatus, error) {
	lc, err := ts.LocalClient()
	if err != nil {
		return nil, err
	}
	for {
		st, err := lc.Status(ctx)
		if err == nil {
			for _, p := range st.Peer {
				if p.HostName == hostname {
					return p, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("peer %q never appeared: %w", hostname, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
