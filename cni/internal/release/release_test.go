package release

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// apiServer is a TLS server answering the DaemonSet GET with the statuses
// and bodies in answers, one per request (the last one repeats), and a
// Checker for it made by InCluster from a service account directory.
func apiServer(t *testing.T, answers ...[2]string) (*Checker, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		if r.URL.Path != "/apis/apps/v1/namespaces/tscni/daemonsets/tailscale-cni" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "unexpected "+r.URL.Path+" "+r.Header.Get("Authorization"), http.StatusTeapot)
			return
		}
		a := answers[min(i, len(answers)-1)]
		code := map[string]int{"200": 200, "401": 401, "403": 403, "404": 404, "500": 500}[a[0]]
		w.WriteHeader(code)
		_, _ = w.Write([]byte(a[1]))
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for name, data := range map[string]string{"ca.crt": string(ca), "token": "tok\n", "namespace": "tscni"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	u, _ := url.Parse(srv.URL)
	env := map[string]string{"KUBERNETES_SERVICE_HOST": u.Hostname(), "KUBERNETES_SERVICE_PORT": u.Port()}
	c, err := InCluster(func(k string) string { return env[k] }, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	return c, &n
}

func TestDaemonSet(t *testing.T) {
	for _, tc := range []struct {
		name, code, body string
		want             Verdict
		why              string // a part of the reason
		wantErr          bool
	}{
		{name: "there", code: "200", body: `{"metadata":{"name":"tailscale-cni"}}`, want: Keep, why: "restart or an update"},
		{name: "being deleted", code: "200", body: `{"metadata":{"deletionTimestamp":"2026-12-01T14:00:00Z"}}`, want: Remove, why: "being deleted (since 2026-12-01T14:00:00Z)"},
		{name: "gone", code: "404", body: `{"kind":"Status"}`, want: Remove, why: "is gone"},
		{name: "service account gone", code: "401", want: Remove, why: "service account is gone"},
		{name: "role gone", code: "403", want: Remove, why: "Role or RoleBinding is gone"},
		{name: "server error", code: "500", body: "etcd\nunavailable", wantErr: true},
		{name: "not JSON", code: "200", body: "<html>", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := apiServer(t, [2]string{tc.code, tc.body})
			v, why, err := c.DaemonSet(context.Background(), "tailscale-cni")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				if v != Keep {
					t.Errorf("verdict %v with an error, want keep", v)
				}
				return
			}
			if v != tc.want || !strings.Contains(why, tc.why) {
				t.Errorf("got %v (%s), want %v (…%s…)", v, why, tc.want, tc.why)
			}
		})
	}
}

func TestDecideRetries(t *testing.T) {
	c, n := apiServer(t, [2]string{"500", "busy"}, [2]string{"500", "busy"}, [2]string{"404", ""})
	c.After = func(time.Duration) <-chan time.Time {
		ch := make(chan time.Time, 1)
		ch <- time.Time{}
		return ch
	}
	v, why, err := c.Decide(context.Background(), "tailscale-cni")
	if err != nil || v != Remove || n.Load() != 3 {
		t.Errorf("got %v (%s), %v after %d requests; want remove after 3", v, why, err, n.Load())
	}
}

// TestDecideKeepsWithoutAnswer checks that an API server that never answers
// keeps the chain: removing it by mistake is the worse error.
func TestDecideKeepsWithoutAnswer(t *testing.T) {
	c, _ := apiServer(t, [2]string{"500", "busy"})
	ctx, cancel := context.WithCancel(context.Background())
	c.After = func(time.Duration) <-chan time.Time {
		cancel()
		return make(chan time.Time)
	}
	v, _, err := c.Decide(ctx, "tailscale-cni")
	if v != Keep || err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("got %v, %v; want keep and the server's error", v, err)
	}
}

func TestInClusterNeedsPod(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{name: "no service env", env: map[string]string{}, want: "not in a pod"},
		{name: "no service account", env: map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, want: "reading the cluster CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := InCluster(func(k string) string { return tc.env[k] }, t.TempDir(), "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
