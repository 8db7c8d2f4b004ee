package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// ping pings dst from inside p's netns until it answers or timeout passes.
func ping(t testing.TB, p *pod, dst net.IP, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var out []byte
	var err error
	for time.Since(start) < timeout {
		out, err = exec.Command("ip", "netns", "exec", p.netns, "ping", "-c", "1", "-W", "1", dst.String()).CombinedOutput()
		if err == nil {
			return time.Since(start)
		}
	}
	t.Fatalf("pod %s cannot ping %s after %v: %v\n%s", p.name, dst, timeout, err, out)
	return 0
}

// listenIn opens a TCP listener inside p's netns. The socket stays in that
// netns after ns.Do returns: sockets belong to the netns they were made in.
func listenIn(t testing.TB, p *pod, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := ns.WithNetNSPath(p.path(), func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", p.name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func dialFrom(p *pod, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.WithNetNSPath(p.path(), func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 10*time.Second)
		return err
	})
	return c, err
}

// sinkSums accepts one connection at a time and reports the sha256 of
// everything each one sent.
func sinkSums(ln net.Listener) <-chan [32]byte {
	ch := make(chan [32]byte, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(ch)
				return
			}
			h := sha256.New()
			_, _ = io.Copy(h, c)
			c.Close()
			var sum [32]byte
			copy(sum[:], h.Sum(nil))
			ch <- sum
		}
	}()
	return ch
}

// send10MB sends 10 MB of random bytes over c and compares checksums.
func send10MB(t testing.TB, c net.Conn, sums <-chan [32]byte) {
	t.Helper()
	data := make([]byte, 10<<20)
	rand.Read(data)
	want := sha256.Sum256(data)
	start := time.Now()
	if _, err := io.Copy(c, bytes.NewReader(data)); err != nil {
		t.Fatalf("sending: %v", err)
	}
	c.Close()
	select {
	case got := <-sums:
		if got != want {
			t.Fatalf("10 MB arrived with sha256 %x, sent %x", got, want)
		}
		t.Logf("10 MB over the tailnet in %v, sha256 %x matches", time.Since(start).Round(time.Millisecond), want[:8])
	case <-time.After(60 * time.Second):
		t.Fatal("receiver did not finish within 60s")
	}
}

func devicesByID(t testing.TB, cp controlplane.Client) map[string]controlplane.Device {
	t.Helper()
	ds, err := cp.ListDevices(context.Background(), controlplane.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]controlplane.Device{}
	for _, d := range ds {
		out[d.ID] = d
	}
	return out
}

func TestEndToEnd(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	before := e.counts(t)
	t.Logf("before: %v", before)

	pods := []*pod{e.newPod("pod-a"), e.newPod("pod-b"), e.newPod("pod-c")}
	for _, p := range pods {
		start := time.Now()
		res, err := e.add(ctx, p)
		if err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
		t.Logf("ADD %s in %v: %s", p.name, time.Since(start).Round(time.Millisecond), mustJSON(res))
		var hasEth0, hasTS0 bool
		for _, i := range res.Interfaces {
			hasEth0 = hasEth0 || i.Name == "eth0"
			hasTS0 = hasTS0 || (i.Name == "ts0" && i.Sandbox == p.path())
		}
		if !hasEth0 || !hasTS0 {
			t.Fatalf("ADD %s result lacks eth0 (bridge) or ts0: %s", p.name, mustJSON(res))
		}
		if ip := p.tailnetIPv4(t); ip[0] != 100 || ip[1]&0xc0 != 64 {
			t.Fatalf("pod %s tailnet IPv4 %v is not in 100.64.0.0/10", p.name, ip)
		}
	}
	a, b, c := pods[0], pods[1], pods[2]

	d := ping(t, a, b.tailnetIPv4(t), 30*time.Second)
	t.Logf("pod-a pings pod-b (%v) after %v", b.tailnetIPv4(t), d.Round(time.Millisecond))

	ln := listenIn(t, b, ":5201")
	sums := sinkSums(ln)
	conn, err := dialFrom(a, net.JoinHostPort(b.tailnetIPv4(t).String(), "5201"))
	if err != nil {
		t.Fatalf("pod-a dialing pod-b over the tailnet: %v", err)
	}
	send10MB(t, conn, sums)

	// A node outside the cluster reaches pod C.
	outside, _ := e.hs.NewNode(t, headscaletest.NodeOptions{Hostname: "outside-" + e.id, Tags: []string{"tag:test"}})
	lnC := listenIn(t, c, ":8080")
	sumsC := sinkSums(lnC)
	var oc net.Conn
	deadline := time.Now().Add(30 * time.Second)
	for {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		oc, err = outside.Dial(dctx, "tcp", net.JoinHostPort(c.tailnetIPv4(t).String(), "8080"))
		dcancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("tsnet node outside dialing pod-c: %v", err)
	}
	send10MB(t, oc, sumsC)

	for _, p := range pods {
		if err := e.check(ctx, p); err != nil {
			t.Fatalf("CHECK %s: %v", p.name, err)
		}
	}

	// The stock CLI prints status through the pod's own socket.
	if cli, err := testkit.FindBinary("tailscale"); err != nil {
		t.Errorf("stock tailscale CLI: %v", err)
	} else {
		sock := filepath.Join(e.dir, "run", "pods", "e2e_pod-a", "tailscaled.sock")
		out, err := exec.Command(cli, "--socket", sock, "status").CombinedOutput()
		if err != nil || !strings.Contains(string(out), a.tailnetIPv4(t).String()) {
			t.Errorf("tailscale --socket %s status: %v\n%s", sock, err, out)
		} else {
			t.Logf("tailscale status via pod-a's socket:\n%s", out)
		}
	}

	// Metrics and health on the daemon's loopback port.
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/metrics": `tailscale_cni_pods{state="Running"} 3`,
	} {
		res, err := http.Get("http://" + e.metrics + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %s, want 200 with %q in:\n%s", path, res.Status, want, body)
		}
	}

	devs := devicesByID(t, e.cp)
	var ids []string
	for _, p := range pods {
		found := ""
		for id, d := range devs {
			for _, addr := range d.Addresses {
				if addr.String() == p.tailnetIPv4(t).String() {
					found = id
				}
			}
		}
		if found == "" {
			t.Fatalf("pod %s's node not in Headscale", p.name)
		}
		ids = append(ids, found)
	}

	for _, p := range pods {
		if err := e.del(ctx, p); err != nil {
			t.Fatalf("DEL %s: %v", p.name, err)
		}
	}
	devs = devicesByID(t, e.cp)
	for i, id := range ids {
		if _, ok := devs[id]; ok {
			t.Errorf("pod %s's node %s still in Headscale after DEL", pods[i].name, id)
		}
	}
	after := e.counts(t)
	t.Logf("after:  %v", after)
	if after != before {
		t.Errorf("host objects after DEL differ: before %v, after %v", before, after)
	}
	_ = fmt.Sprint
}
