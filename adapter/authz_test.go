package adapter_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"tailscale.com/tsnet"
	"tsymbiote.dhouti.dev/adapter"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
)

// TestPermissionDenied is acceptance item 2: a caller without a tag and one
// with another tag get PermissionDenied on every method, and /metrics is
// refused to them too, while the WebUI's tag gets through.
func TestPermissionDenied(t *testing.T) {
	w := newWorld(t, nil)
	calls := everyCall("node-b", w.bIP.String())
	for _, who := range []struct {
		host string
		tags []string
	}{
		{"untagged", nil},
		{"other-tag", []string{"tag:test"}},
	} {
		t.Run(who.host, func(t *testing.T) {
			c, ts := w.caller(t, who.host, who.tags...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, cl := range calls {
				err := cl.do(ctx, c)
				if status.Code(err) != codes.PermissionDenied {
					t.Errorf("%s: %v, want PermissionDenied", cl.name, err)
				}
			}
			t.Logf("%d calls refused; e.g. %v", len(calls), calls[1].do(ctx, c))
			if code, _ := httpGet(t, ts, w.adapter, "/metrics"); code != http.StatusForbidden {
				t.Errorf("/metrics: HTTP %d, want 403", code)
			}
		})
	}
	t.Run("webui", func(t *testing.T) {
		c, ts := w.caller(t, "webui", "tag:tsymbiote-webui")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.Prefs(ctx, nil); err != nil {
			t.Fatal(err)
		}
		code, body := httpGet(t, ts, w.adapter, "/metrics")
		if code != http.StatusOK || !strings.Contains(body, `tsymbiote_adapter_calls_total{code="PermissionDenied",method="Status"}`) ||
			!strings.Contains(body, `tsymbiote_adapter_calls_total{code="OK",method="Prefs"} 1`) {
			t.Errorf("/metrics: HTTP %d:\n%s", code, grepLines(body, "tsymbiote_adapter_calls_total"))
		}
		t.Logf("metrics:\n%s", grepLines(body, "tsymbiote_adapter_calls_total"))
		code, body = httpGet(t, ts, w.adapter, "/healthz")
		if code != http.StatusOK || !strings.Contains(body, `"reachable":true`) {
			t.Errorf("/healthz: HTTP %d: %s", code, body)
		}
	})
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func httpGet(t *testing.T, ts *tsnet.Server, a adapter.Ready, path string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return ts.Dial(ctx, network, addr) },
	}}
	res, err := hc.Get("http://" + net.JoinHostPort(a.TailscaleIPs[0].String(), adapter.DefaultPort) + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestReadOnly is acceptance item 3: every method, with valid and invalid
// arguments, leaves node-a's prefs, state and netmap as they were.
func TestReadOnly(t *testing.T) {
	w := newWorld(t, nil)
	c, _ := w.caller(t, "webui", "tag:tsymbiote-webui")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	before := snapshot(t, w.a)
	calls := everyCall("node-b", w.bIP.String())
	codesSeen := map[codes.Code]int{}
	for _, cl := range calls {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		err := cl.do(cctx, c)
		ccancel()
		code := status.Code(err)
		codesSeen[code]++
		if code == codes.Unknown || code == codes.PermissionDenied {
			t.Errorf("%s: %v", cl.name, err)
		}
		t.Logf("%-28s %v %.150v", cl.name, code, err)
	}
	after := snapshot(t, w.a)
	for k := range before {
		if !reflect.DeepEqual(before[k], after[k]) {
			t.Errorf("%s changed:\nbefore: %s\nafter:  %s", k, before[k], after[k])
		}
	}
	t.Logf("%d calls; codes %v; compared %v", len(calls), codesSeen, slices.Sorted(mapsKeys(before)))
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// snapshot captures what a write through the adapter could change: the
// prefs, the persisted state, and the netmap's identity, peers, DNS,
// packet filter and DERP map.
func snapshot(t *testing.T, d *tailscaledtest.Daemon) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lc := d.Client()
	out := map[string]string{}
	js := func(k string, v any, err error) {
		if err != nil {
			t.Fatalf("snapshot %s: %v", k, err)
		}
		b, _ := json.Marshal(v)
		out[k] = string(b)
	}
	p, err := lc.GetPrefs(ctx)
	js("prefs", p, err)
	st, err := lc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type peer struct {
		ID, Key, Host string
		IPs           any
		Tags          any
		AllowedIPs    any
	}
	var peers []peer
	for _, ps := range st.Peer {
		peers = append(peers, peer{string(ps.ID), ps.PublicKey.String(), ps.HostName, ps.TailscaleIPs, ps.Tags, ps.AllowedIPs})
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].ID < peers[j].ID })
	js("netmap.peers", peers, nil)
	js("netmap.self", []any{st.BackendState, st.Self.ID, st.Self.PublicKey, st.TailscaleIPs, st.Self.Tags}, nil)
	dns, err := lc.DNSConfig(ctx)
	js("netmap.dns", dns, err)
	rules, err := lc.DebugPacketFilterRules(ctx)
	js("netmap.packetfilter", rules, err)
	dm, err := lc.CurrentDERPMap(ctx)
	js("netmap.derpmap", dm, err)
	serve, err := lc.GetServeConfig(ctx)
	js("serveconfig", serve, err)
	state, err := os.ReadFile(filepath.Join(d.StateDir, "tailscaled.state"))
	if err != nil {
		t.Fatal(err)
	}
	out["state"] = string(state)
	return out
}
