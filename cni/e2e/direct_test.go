package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/controlplane"
)

// tcpConnects reports whether a TCP connection from p's netns to addr:port
// opens within a few seconds.
func tcpConnects(p *pod, addr string, port int) bool {
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", addr, port)
	return exec.Command("ip", "netns", "exec", p.netns, "timeout", "3", "bash", "-c", script).Run() == nil
}

// listenTCP runs a TCP server on addr:port in p's netns until the test ends.
func listenTCP(t *testing.T, p *pod, addr string, port int) {
	t.Helper()
	srv := exec.Command("ip", "netns", "exec", p.netns, "iperf3", "-s", "-B", addr, "-p", fmt.Sprint(port))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
}

// TestSameNodeDirectPolicy checks that the direct path between two pods of
// one daemon (podbackend's datapath.go) enforces the tailnet policy as
// WireGuard did: with a policy that lets b reach a but not a reach b, a's
// connections to b are refused by b's packet filter on the direct path,
// while b's to a still open.
func TestSameNodeDirectPolicy(t *testing.T) {
	e := newEnv(t)
	ensureTool(t, "iperf3", "iperf3")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, b := e.newPod("dira"), e.newPod("dirb")
	for _, p := range []*pod{a, b} {
		if _, err := e.add(ctx, p); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
	}
	aIP, bIP := a.tailnetIPv4(t).String(), b.tailnetIPv4(t).String()
	firstReply(t, a, bIP)
	firstReply(t, b, aIP)
	const port = 5301
	listenTCP(t, a, aIP, port)
	listenTCP(t, b, bIP, port)

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !ok(); time.Sleep(500 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60s", what)
			}
		}
	}
	waitFor("a connects to b under the open policy", func() bool { return tcpConnects(a, bIP, port) })
	if !strings.Contains(e.daemonLog.String(), fmt.Sprintf("direct: %s -> %s stays on this node", aIP, bIP)) {
		t.Fatalf("a's packets to b did not take the direct path; daemon log:\n%s", e.daemonLog.String())
	}

	// UDP takes the direct path too: a's datagrams reach b's iperf3.
	udp, err := exec.CommandContext(ctx, "ip", "netns", "exec", a.netns, "iperf3", "-c", bIP, "-p", fmt.Sprint(port),
		"-u", "-b", "100M", "-t", "2", "-J").Output()
	if err != nil {
		t.Fatalf("iperf3 -u a -> b: %v\n%s", err, udp)
	}
	var ur struct {
		End struct {
			Sum struct {
				Packets     int     `json:"packets"`
				LostPercent float64 `json:"lost_percent"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err := json.Unmarshal(udp, &ur); err != nil {
		t.Fatalf("iperf3 -u output: %v\n%s", err, udp)
	}
	if ur.End.Sum.Packets == 0 || ur.End.Sum.LostPercent >= 100 {
		t.Fatalf("no UDP from a reached b: %s", udp)
	}
	t.Logf("UDP a -> b: %d datagrams sent, %.1f%% lost", ur.End.Sum.Packets, ur.End.Sum.LostPercent)

	e.allowOnly(ctx, bIP, aIP)
	waitFor("a can no longer connect to b", func() bool { return !tcpConnects(a, bIP, port) })
	if !tcpConnects(b, aIP, port) {
		t.Error("b cannot connect to a, which the policy allows")
	}
	refused := fmt.Sprintf("direct: dropped TCP %s:", aIP)
	var line string
	for _, l := range strings.Split(e.daemonLog.String(), "\n") {
		if strings.Contains(l, refused) && strings.Contains(l, fmt.Sprintf("-> %s:%d: refused by the receiver's packet filter", bIP, port)) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no direct-path drop of a's SYN to b in the daemon log:\n%s", e.daemonLog.String())
	}
	t.Logf("%s", line)

	for _, p := range []*pod{a, b} {
		if err := e.del(ctx, p); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
}

// allowOnly replaces the test Headscale's open grant with one that lets
// only src reach dst (tailnet IPs).
func (e *env) allowOnly(ctx context.Context, src, dst string) {
	t := e.t
	t.Helper()
	pe, err := controlplane.AsPolicyEditor(e.cp)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := pe.GetPolicy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const open = `{"src": ["*"], "dst": ["*"], "ip": ["*"]}`
	if !strings.Contains(cur.Body, open) {
		t.Fatalf("test Headscale's policy lacks the open grant %s:\n%s", open, cur.Body)
	}
	oneWay := fmt.Sprintf(`{"src": [%q], "dst": [%q], "ip": ["*"]}`, src, dst)
	if _, err := pe.SetPolicy(ctx, strings.Replace(cur.Body, open, oneWay, 1), cur.Version); err != nil {
		t.Fatalf("setting a policy that lets only %s reach %s: %v", src, dst, err)
	}
}
