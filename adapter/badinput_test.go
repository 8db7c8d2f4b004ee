package adapter_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"tsymbiote.dhouti.dev/adapter"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// rawCodec sends request bytes as they are, to feed the server malformed
// messages.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

// TestBadInput is acceptance item 4: unknown targets, a missing socket,
// tailscaled stopped mid-call, oversized and malformed requests all give a
// clear gRPC status, and the adapter answers again once tailscaled is back.
// It also covers several targets: a socket, a missing socket, and a
// directory of sockets (as the CNI daemon keeps per pod).
func TestBadInput(t *testing.T) {
	dir, err := os.MkdirTemp("", "sockdir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	missing := filepath.Join(dir, "missing", "tailscaled.sock")
	podDir := filepath.Join(dir, "pods")
	if err := os.Mkdir(podDir, 0o755); err != nil {
		t.Fatal(err)
	}

	w := newWorld(t, func(w *world, c *adapter.Config) {
		c.Sockets = []string{w.a.Socket, missing, podDir}
	})
	if err := os.Symlink(w.b.Socket, filepath.Join(podDir, "pod-b.sock")); err != nil {
		t.Fatal(err)
	}
	conn, _ := w.dial(t, "webui", "tag:tsymbiote-webui")
	c := adapterv1.NewAdapterServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("targets", func(t *testing.T) {
		r, err := c.ListTargets(ctx, &adapterv1.ListTargetsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, tg := range r.Targets {
			got[tg.Name] = tg.Reachable
			t.Logf("target %q socket=%s reachable=%v err=%.80q", tg.Name, tg.Socket, tg.Reachable, tg.Error)
		}
		if len(got) != 3 || !got[w.a.Socket] || got[missing] || !got["pod-b"] || r.DefaultTarget != "" {
			t.Fatalf("targets = %v, default %q", got, r.DefaultTarget)
		}
		_, err = c.Status(ctx, &adapterv1.StatusRequest{})
		wantCode(t, "Status without target among 3", err, codes.InvalidArgument)
		st, err := c.Status(ctx, &adapterv1.StatusRequest{Target: "pod-b"})
		if err != nil || st.Self.GetHostname() != "node-b" {
			t.Errorf("Status(pod-b) = %v, %v", st.GetSelf().GetHostname(), err)
		}
		_, err = c.Status(ctx, &adapterv1.StatusRequest{Target: "pod-zzz"})
		wantCode(t, "unknown target", err, codes.NotFound)
		_, err = c.Status(ctx, &adapterv1.StatusRequest{Target: missing})
		wantCode(t, "missing socket", err, codes.Unavailable)
		t.Logf("missing socket: %v", err)
		err = recvErr(c.StreamLogs(ctx, &adapterv1.StreamLogsRequest{Target: missing}))
		wantCode(t, "StreamLogs on missing socket", err, codes.Unavailable)
		err = recvErr(c.StreamBusEvents(ctx, &adapterv1.StreamBusEventsRequest{Target: missing}))
		wantCode(t, "StreamBusEvents on missing socket", err, codes.Unavailable)
	})

	t.Run("oversized", func(t *testing.T) {
		_, err := c.Status(ctx, &adapterv1.StatusRequest{Target: strings.Repeat("x", 100<<10)})
		wantCode(t, "100 KiB request", err, codes.ResourceExhausted)
		t.Logf("oversized: %v", err)
	})

	t.Run("malformed", func(t *testing.T) {
		for _, raw := range [][]byte{
			{0xff, 0xff, 0xff},       // invalid tag
			{0x0a, 0x10, 'a'},        // string field running past the end
			{0x0a, 0x02, 0xc3, 0x28}, // invalid UTF-8 in a string
			{0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, // overlong varint
		} {
			var out []byte
			err := conn.Invoke(ctx, adapterv1.AdapterService_Ping_FullMethodName, raw, &out, grpc.ForceCodec(rawCodec{}))
			if code := status.Code(err); code != codes.Internal && code != codes.InvalidArgument {
				t.Errorf("malformed %x: %v", raw, err)
			}
			t.Logf("malformed %x: %v", raw, err)
		}
	})

	t.Run("stopped mid-call and back", func(t *testing.T) {
		a := w.a.Socket
		// A ping to a peer that has gone quiet keeps the call open while
		// tailscaled dies under it.
		sleeper, st := w.hs.NewNode(t, headscaletest.NodeOptions{Hostname: "sleeper", Tags: []string{"tag:test"}})
		waitPeer(t, ctx, w.a, "sleeper")
		sleeper.Close()
		errc := make(chan error, 1)
		go func() {
			r, err := c.Ping(ctx, &adapterv1.PingRequest{Target: a, Peer: st.TailscaleIPs[0].String(), Type: adapterv1.PingType_PING_TYPE_DISCO, Count: 5, Timeout: durationpb.New(3 * time.Second)})
			t.Logf("ping: %v", r)
			errc <- err
		}()
		logs, err := c.StreamLogs(ctx, &adapterv1.StreamLogsRequest{Target: a})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := logs.Recv(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		w.a.Stop()
		err = <-errc
		wantCode(t, "Ping while tailscaled stops", err, codes.Unavailable)
		t.Logf("ping mid-call: %v", err)
		err = recvErr(logs, nil)
		wantCode(t, "log stream while tailscaled stops", err, codes.Unavailable)
		t.Logf("log stream mid-call: %v", err)

		_, err = c.Status(ctx, &adapterv1.StatusRequest{Target: a})
		wantCode(t, "Status while stopped", err, codes.Unavailable)
		t.Logf("while stopped: %v", err)
		// The other targets are unaffected.
		if _, err := c.Status(ctx, &adapterv1.StatusRequest{Target: "pod-b"}); err != nil {
			t.Errorf("pod-b while a is stopped: %v", err)
		}

		if err := w.a.Restart(); err != nil {
			t.Fatal(err)
		}
		for {
			st, err := c.Status(ctx, &adapterv1.StatusRequest{Target: a})
			if err != nil {
				t.Fatalf("Status after restart: %v", err)
			}
			if st.BackendState == "Running" {
				t.Logf("after restart: %s %s with %d peers", st.Self.GetHostname(), st.BackendState, len(st.Peers))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		s, err := c.StreamLogs(ctx, &adapterv1.StreamLogsRequest{Target: a})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := s.Recv(); err != nil {
			t.Fatalf("log stream after restart: %v", err)
		} else {
			t.Logf("log stream after restart: %q", m.Line)
		}
	})
}
