package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit/cluster"
)

// What tailscale-cni's daemon makes in the host's network namespace
// (cni/internal/podnet): links named tsh/tst and ten hex digits, rules at
// one priority, and a routing table per pod in a range.
const (
	cniRulePriority = 5270
	cniTableBase    = 52700
	cniTableCount   = 4096
)

var (
	tailnetV4 = netip.MustParsePrefix("100.64.0.0/10")
	tailnetV6 = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
)

// podNet is what a pod's network namespace holds, as seen from the host.
type podNet struct {
	netns string         // its name under /run/netns
	eth0  netip.Addr     // the cluster network's address (the pod IP)
	ts0   []netip.Prefix // tailscale-cni's addresses; none without ts0
	hasTS bool           // ts0 exists
}

func (p podNet) tailnet4() netip.Addr { return p.firstIn(tailnetV4) }
func (p podNet) tailnet6() netip.Addr { return p.firstIn(tailnetV6) }

func (p podNet) firstIn(r netip.Prefix) netip.Addr {
	for _, a := range p.ts0 {
		if r.Contains(a.Addr()) {
			return a.Addr()
		}
	}
	return netip.Addr{}
}

// podNets reads every network namespace containerd made (/run/netns/cni-*)
// and keys what it finds by the pod IP on eth0.
func podNets(ctx context.Context) (map[netip.Addr]podNet, error) {
	out := map[netip.Addr]podNet{}
	for _, ns := range netnsNames() {
		if !strings.HasPrefix(ns, "cni-") {
			continue
		}
		b, err := exec.CommandContext(ctx, "ip", "-n", ns, "-j", "addr", "show").Output()
		if err != nil {
			continue // a namespace being torn down
		}
		var links []struct {
			IfName   string `json:"ifname"`
			AddrInfo []struct {
				Local     string `json:"local"`
				PrefixLen int    `json:"prefixlen"`
				Scope     string `json:"scope"`
			} `json:"addr_info"`
		}
		if err := json.Unmarshal(b, &links); err != nil {
			return nil, fmt.Errorf("ip -n %s addr: %w", ns, err)
		}
		p := podNet{netns: ns}
		for _, l := range links {
			for _, a := range l.AddrInfo {
				addr, err := netip.ParseAddr(a.Local)
				if err != nil || a.Scope == "link" {
					continue
				}
				switch l.IfName {
				case "eth0":
					if addr.Is4() {
						p.eth0 = addr
					}
				case "ts0":
					p.ts0 = append(p.ts0, netip.PrefixFrom(addr, a.PrefixLen))
				}
			}
			if l.IfName == "ts0" {
				p.hasTS = true
			}
		}
		if p.eth0.IsValid() {
			out[p.eth0] = p
		}
	}
	return out, nil
}

func netnsNames() []string {
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// daemonLeftovers names what tailscale-cni's daemon still has in the host's
// network namespace: its links, rules and routing tables.
func daemonLeftovers(ctx context.Context) []string {
	var left []string
	out, _ := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.SplitN(line, ": ", 3)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		if strings.HasPrefix(name, "tsh") || strings.HasPrefix(name, "tst") {
			left = append(left, "link "+name)
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		out, _ := exec.CommandContext(ctx, "ip", fam, "rule", "show").Output()
		for line := range strings.SplitSeq(string(out), "\n") {
			if strings.HasPrefix(line, strconv.Itoa(cniRulePriority)+":") {
				left = append(left, "rule "+line)
			}
		}
		out, _ = exec.CommandContext(ctx, "ip", fam, "route", "show", "table", "all").Output()
		for line := range strings.SplitSeq(string(out), "\n") {
			f := strings.Fields(line)
			if i := slices.Index(f, "table"); i >= 0 && i+1 < len(f) {
				if t, err := strconv.Atoi(f[i+1]); err == nil && t >= cniTableBase && t < cniTableBase+cniTableCount {
					left = append(left, "route "+line)
				}
			}
		}
	}
	return left
}

// sweepDaemonLeftovers removes what daemonLeftovers finds, and returns
// what that was.
func sweepDaemonLeftovers(ctx context.Context) []string {
	left := daemonLeftovers(ctx)
	for _, l := range left {
		kind, rest, _ := strings.Cut(l, " ")
		f := strings.Fields(rest)
		switch kind {
		case "link":
			_ = exec.CommandContext(ctx, "ip", "link", "del", f[0]).Run()
		case "rule":
			for _, fam := range []string{"-4", "-6"} {
				for exec.CommandContext(ctx, "ip", fam, "rule", "del", "priority", strconv.Itoa(cniRulePriority)).Run() == nil {
				}
			}
		case "route":
			if i := slices.Index(f, "table"); i >= 0 && i+1 < len(f) {
				for _, fam := range []string{"-4", "-6"} {
					_ = exec.CommandContext(ctx, "ip", fam, "route", "flush", "table", f[i+1]).Run()
				}
			}
		}
	}
	return left
}

// controlPlaneOf is a controlplane client for the cluster's Headscale, as
// the daemons use it (a Device's Name is Headscale's given name).
func controlPlaneOf(c *cluster.Cluster, logf func(string, ...any)) (controlplane.Client, error) {
	cfg, err := controlplane.ConfigFromEnv(c.Headscale.Getenv)
	if err != nil {
		return nil, err
	}
	return controlplane.New(logf, cfg)
}

// headscaleNodes lists the cluster's Headscale nodes.
func headscaleNodes(ctx context.Context, c *cluster.Cluster) ([]controlplane.Device, error) {
	cp, err := controlPlaneOf(c, func(string, ...any) {})
	if err != nil {
		return nil, err
	}
	return cp.ListDevices(ctx, controlplane.ListOptions{})
}

// podNodes are the Headscale nodes whose names start with prefix, by name.
func podNodes(ctx context.Context, c *cluster.Cluster, prefix string) (map[string]controlplane.Device, error) {
	nodes, err := headscaleNodes(ctx, c)
	if err != nil {
		return nil, err
	}
	out := map[string]controlplane.Device{}
	for _, n := range nodes {
		if strings.HasPrefix(n.Name, prefix) || strings.HasPrefix(n.Hostname, prefix) {
			out[n.Name] = n
		}
	}
	return out, nil
}

// fetchResult is testapp's /fetch answer.
type fetchResult struct {
	URL     string  `json:"url"`
	Status  int     `json:"status"`
	Bytes   int64   `json:"bytes"`
	SHA256  string  `json:"sha256"`
	Seconds float64 `json:"seconds"`
}

// podFetch asks the testapp at pod IP from to fetch target, within timeout.
func podFetch(ctx context.Context, from netip.Addr, target string, timeout time.Duration) (*fetchResult, error) {
	u := fmt.Sprintf("http://%s/fetch?timeout=%s&url=%s", netip.AddrPortFrom(from, testappPort), timeout, url.QueryEscape(target))
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var msg [512]byte
		n, _ := resp.Body.Read(msg[:])
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg[:n])))
	}
	var r fetchResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK {
		return &r, fmt.Errorf("%s answered %d", target, r.Status)
	}
	return &r, nil
}

// tailnetURL is testapp's URL on a tailnet address.
func tailnetURL(a netip.Addr, path string) string {
	return "http://" + netip.AddrPortFrom(a, testappPort).String() + path
}

// poll calls f every interval until it returns nil or ctx ends, and then
// returns f's last error.
func poll(ctx context.Context, interval time.Duration, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// followLogs streams a pod's log until the pod's container ends, and
// returns what it read on the channel.
func followLogs(ctx context.Context, c *cluster.Cluster, ns, pod string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		out, err := c.Kubectl(ctx, "logs", "-f", "-n", ns, pod, "-c", "daemon")
		if err != nil && !errors.Is(err, context.Canceled) {
			out += "\n(log stream: " + err.Error() + ")"
		}
		ch <- out
	}()
	return ch
}

// waitGone waits for the pods that args name or select to be deleted;
// none at all is success, which kubectl wait calls an error.
func waitGone(ctx context.Context, c *cluster.Cluster, ns string, args ...string) error {
	_, err := c.Kubectl(ctx, append([]string{"wait", "--for=delete", "pod", "-n", ns}, args...)...)
	if err != nil && (strings.Contains(err.Error(), "no matching resources found") || strings.Contains(err.Error(), "NotFound")) {
		return nil
	}
	return err
}

// linesWith returns the lines of s that contain sub.
func linesWith(s, sub string) []string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// stepTimer logs each step's wall time, in seconds.
type stepTimer struct {
	t     *testing.T
	name  string
	start time.Time
}

func startStep(t *testing.T, name string) *stepTimer {
	t.Logf("step %q: start", name)
	return &stepTimer{t: t, name: name, start: time.Now()}
}

func (s *stepTimer) done() {
	s.t.Logf("step %q took %.1fs", s.name, time.Since(s.start).Seconds())
}

// checkHook waits for the old daemon's log (from followLogs) and wants its
// install-cni preStop hook to have said want.
func checkHook(t *testing.T, logs <-chan string, want string) {
	t.Helper()
	select {
	case out := <-logs:
		hook := linesWith(out, "install-cni:")
		t.Logf("the daemon's preStop hook said: %q", hook)
		if len(hook) == 0 || !strings.Contains(hook[0], want) {
			t.Errorf("preStop hook did not say %q; the daemon's log ends:\n%s", want, tail(out, 15))
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the daemon's log stream did not end")
	}
}
