package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"tsymbiote.dhouti.dev/testkit"
)

// reachAll pings every address in dsts from inside from's netns, each every
// interval until it first answers, and returns when each answered (zero
// for those that never did before ctx ended). One raw ICMP socket does it
// all: 109 ping processes would cost more CPU than what they measure.
func reachAll(ctx context.Context, from *pod, dsts []netip.Addr, interval time.Duration) (map[netip.Addr]time.Time, error) {
	var c *icmp.PacketConn
	err := ns.WithNetNSPath(from.path(), func(ns.NetNS) error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("icmp socket in %s: %w", from.name, err)
	}
	defer c.Close()
	id := rand.IntN(1 << 16)
	var mu sync.Mutex
	got := make(map[netip.Addr]time.Time, len(dsts))
	want := make(map[netip.Addr]bool, len(dsts))
	for _, d := range dsts {
		want[d] = true
	}
	allIn := make(chan struct{})
	go func() {
		buf := make([]byte, 1500)
		for {
			n, src, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); !ok || e.ID != id {
				continue
			}
			a, ok := netip.AddrFromSlice(src.(*net.IPAddr).IP.To4())
			if !ok {
				continue
			}
			mu.Lock()
			if want[a] && got[a].IsZero() {
				got[a] = time.Now()
				if len(got) == len(want) {
					close(allIn)
				}
			}
			mu.Unlock()
		}
	}()
	if len(dsts) == 0 {
		return got, nil
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		mu.Lock()
		var todo []netip.Addr
		for _, d := range dsts {
			if got[d].IsZero() {
				todo = append(todo, d)
			}
		}
		mu.Unlock()
		for _, d := range todo {
			msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: []byte("tsymbiote-bench")}}
			wb, _ := msg.Marshal(nil)
			// Errors (no route yet) are what the probe waits out.
			_, _ = c.WriteTo(wb, &net.IPAddr{IP: d.AsSlice()})
		}
		select {
		case <-allIn:
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(got), nil
		case <-ctx.Done():
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(got), nil
		case <-tick.C:
		}
	}
}

// tailnetAddr is p's tailnet IPv4 as a netip.Addr.
func tailnetAddr(b testing.TB, p *pod) netip.Addr {
	a, _ := netip.AddrFromSlice(p.tailnetIPv4(b))
	return a
}

// reachEvery has every pod answer a peer within timeout: pods[0] pings all
// the others, and pods[1] pings pods[0]. It returns, from start, when the
// last one that answered first did, when each did, and the names of those
// that never did (a figure to print, not a reason to stop measuring).
func reachEvery(b testing.TB, pods []*pod, start time.Time, timeout time.Duration) (last time.Duration, each []time.Duration, missing []string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var others []netip.Addr
	for _, p := range pods[1:] {
		others = append(others, tailnetAddr(b, p))
	}
	var wg sync.WaitGroup
	var fromAnchor, toAnchor map[netip.Addr]time.Time
	var err1, err2 error
	wg.Go(func() { fromAnchor, err1 = reachAll(ctx, pods[0], others, 50*time.Millisecond) })
	wg.Go(func() {
		toAnchor, err2 = reachAll(ctx, pods[1], []netip.Addr{tailnetAddr(b, pods[0])}, 50*time.Millisecond)
	})
	wg.Wait()
	if err1 != nil || err2 != nil {
		b.Fatalf("probing: %v %v", err1, err2)
	}
	for k, v := range toAnchor {
		fromAnchor[k] = v
	}
	for _, p := range pods {
		t, ok := fromAnchor[tailnetAddr(b, p)]
		if !ok || t.IsZero() {
			missing = append(missing, p.name)
			continue
		}
		d := t.Sub(start)
		each = append(each, d)
		last = max(last, d)
	}
	return last, each, missing
}

// procCPUSeconds is the CPU time (user and system) a process has used, from
// /proc/<pid>/stat, in seconds.
func procCPUSeconds(b testing.TB, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) may hold spaces; fields after it don't.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	const clkTck = 100 // USER_HZ on Linux
	return (ut + st) / clkTck
}

// daemonMetric reads one sample from the daemon's /metrics: name with its
// labels as exposed, e.g. `tailscale_cni_pool_nodes{state="ready"}`.
func daemonMetric(b testing.TB, addr, name string) float64 {
	v, ok := tryMetric(b, addr, name)
	if !ok {
		b.Fatalf("no %s in the daemon's metrics", name)
	}
	return v
}

// tryMetric is daemonMetric for a sample that may be absent.
func tryMetric(b testing.TB, addr, name string) (float64, bool) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f, true
		}
	}
	return 0, false
}

// saveProfile fetches /debug/pprof/<what> from the daemon's debug listener
// into dir/file, when dir is set (TSYMBIOTE_BENCH_PROFILES).
func saveProfile(b testing.TB, dir, debugAddr, what, file string) {
	if dir == "" {
		return
	}
	resp, err := http.Get("http://" + debugAddr + "/debug/pprof/" + what)
	if err != nil {
		b.Errorf("profile %s: %v", what, err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Errorf("profile %s: %v %s", what, err, resp.Status)
		return
	}
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Errorf("profile %s: %v", what, err)
		return
	}
	b.Logf("saved %s (go tool pprof -top %s)", path, path)
}

// medianOf returns the median of xs (the middle one; xs has an odd length
// in the benchmark).
func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// explainUnreached logs, for up to three pods that never answered, what the
// anchor's node says of them: its status line (path, last handshake) and a
// disco ping, which tells a peer that cannot be found from one that only
// drops WireGuard.
func explainUnreached(b testing.TB, e *env, anchor *pod, pods []*pod, names []string) {
	cli, err := testkit.FindBinary("tailscale")
	if err != nil {
		b.Logf("no stock tailscale CLI to explain unreachable pods: %v", err)
		return
	}
	sock := filepath.Join(e.dir, "run", "pods", anchor.ns+"_"+anchor.name, "tailscaled.sock")
	byName := map[string]*pod{}
	for _, p := range pods {
		byName[p.name] = p
	}
	for i, n := range names {
		if i == 3 {
			break
		}
		ip := byName[n].tailnetIPv4(b).String()
		// A node too busy to answer its LocalAPI would hold the benchmark.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		st, _ := exec.CommandContext(ctx, cli, "--socket", sock, "status").CombinedOutput()
		var line string
		for _, l := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(l, ip+" ") {
				line = l
			}
		}
		ping, _ := exec.CommandContext(ctx, cli, "--socket", sock, "ping", "-c", "2", "--timeout", "3s", ip).CombinedOutput()
		cancel()
		b.Logf("%s (%s) as the anchor sees it: status %q; disco ping: %s", n, ip, line, strings.TrimSpace(string(ping)))
	}
}
