package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// rss is a process's resident set, whole and its anonymous part, in KiB.
// The rest is file-backed: mostly the daemon's own binary, whose pages are
// page cache shared with every process that maps it and are touched once,
// not per pod.
type rss struct{ total, anon int }

// rssKiB reads a process's resident set.
func rssKiB(b testing.TB, pid int) rss {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	var r rss
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			r.total = n
		case "RssAnon:":
			r.anon = n
		}
	}
	if r.total == 0 {
		b.Fatal("no VmRSS")
	}
	return r
}

// settledRSS is the daemon's resident set once the garbage of the last ADDs
// is gone: it waits past the daemon's 30-second memory release (see
// releaseMemory in cmd/tailscale-cni-daemon) and takes the lowest of a few
// samples. Read right after a burst of ADDs, RSS swings by 100 MiB and more
// at 30 pods with the moment the garbage collector last ran.
func settledRSS(b testing.TB, pid int) rss {
	time.Sleep(31 * time.Second)
	low := rssKiB(b, pid)
	for range 4 {
		time.Sleep(time.Second)
		r := rssKiB(b, pid)
		low = rss{min(low.total, r.total), min(low.anon, r.anon)}
	}
	return low
}

// firstReply pings dst from p every 50 ms until a reply, and returns when.
func firstReply(b testing.TB, p *pod, dst string) time.Time {
	out, err := exec.Command("ip", "netns", "exec", p.netns, "ping", "-n", "-i", "0.05", "-c", "1", "-w", "60", dst).CombinedOutput()
	if err != nil {
		b.Fatalf("pod %s never reached %s: %v\n%s", p.name, dst, err, out)
	}
	return time.Now()
}

// iperf runs iperf3 for secs from client's netns to server's address (the
// server runs in server's netns) and returns Gbit/s received.
func iperf(b testing.TB, client, server *pod, addr string, secs int) float64 {
	b.Helper()
	srv := exec.Command("ip", "netns", "exec", server.netns, "iperf3", "-s", "-1", "-B", addr)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var out []byte
	var err error
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		out, err = exec.Command("ip", "netns", "exec", client.netns, "iperf3", "-c", addr, "-t", strconv.Itoa(secs), "-J").Output()
		if err == nil {
			break
		}
	}
	if err != nil {
		b.Fatalf("iperf3 to %s: %v\n%s", addr, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatal(err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// stockTailscaled runs the stock tailscaled in p's netns, logged in to the
// test's Headscale, and returns its tailnet IPv4.
func (e *env) stockTailscaled(b testing.TB, p *pod, n int) (string, error) {
	b.Helper()
	tsd, cli := testkit.Binary(b, "tailscaled"), testkit.Binary(b, "tailscale")
	dir := filepath.Join(e.dir, fmt.Sprintf("tailscaled-%d", n))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "tailscaled.sock")
	cmd := exec.Command("ip", "netns", "exec", p.netns, tsd,
		"--state="+filepath.Join(dir, "tailscaled.state"), "--socket="+sock,
		"--statedir="+dir, "--tun=tsbench"+strconv.Itoa(n), "--port=0", "--verbose=1")
	cmd.Env = append(os.Environ(), "TS_DEBUG_USE_DERP_HTTP=1", "TS_NO_LOGS_NO_SUPPORT=true")
	proc := testkit.Start(b, cmd)
	key, err := e.hs.AuthKey(context.Background(), headscaletest.KeyOptions{Tags: []string{headscaletest.TagTest}})
	if err != nil {
		b.Fatal(err)
	}
	for range 100 {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	up := exec.Command(cli, "--socket="+sock, "up", "--login-server="+e.hs.URL, "--auth-key="+key,
		"--hostname=stock-"+p.name, "--accept-dns=false", "--netfilter-mode=off", "--timeout=60s")
	if out, err := up.CombinedOutput(); err != nil {
		l := proc.Output()
		if len(l) > 6000 {
			l = l[len(l)-6000:]
		}
		return "", fmt.Errorf("tailscale up in %s: %w\n%s\ntailscaled:\n%s", p.name, err, out, l)
	}
	out, err := exec.Command(cli, "--socket="+sock, "ip", "-4").Output()
	return strings.TrimSpace(string(out)), err
}

// BenchmarkCNI measures, in one run: ADD latency and ADD-to-reachable from a
// peer pod over 20 pods, daemon RSS per extra pod at 1, 10 and 30 pods, idle
// log lines per pod per minute at 20 pods, and iperf3 pod to pod over the
// tailnet beside the plain bridge path and two stock tailscaled.
// Run it with -benchtime 1x; it is slow (minutes).
func BenchmarkCNI(b *testing.B) {
	e := newEnv(b)
	ensureTool(b, "iperf3", "iperf3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	pid := e.daemon.PID()
	rss0 := settledRSS(b, pid)

	anchor := e.newPod("anchor")
	if _, err := e.add(ctx, anchor); err != nil {
		b.Fatal(err)
	}
	firstReply(b, anchor, anchor.tailnetIPv4(b).String())
	pods := []*pod{anchor}
	rssAt := map[int]rss{}
	var addLat, readyLat []time.Duration
	var idlePerPodMin float64
	for i := 1; len(pods) < 30; i++ {
		if len(pods) == 1 || len(pods) == 10 {
			rssAt[len(pods)] = settledRSS(b, pid)
		}
		p := e.newPod(fmt.Sprintf("p%02d", i))
		start := time.Now()
		if _, err := e.add(ctx, p); err != nil {
			b.Fatalf("ADD %s: %v", p.name, err)
		}
		added := time.Since(start)
		reached := firstReply(b, anchor, p.tailnetIPv4(b).String())
		pods = append(pods, p)
		if len(addLat) < 20 {
			addLat = append(addLat, added)
			readyLat = append(readyLat, reached.Sub(start))
		}
		if len(pods) == 20 {
			time.Sleep(20 * time.Second) // let start-up chatter pass
			n0 := strings.Count(e.daemonLog.String(), "\n")
			time.Sleep(60 * time.Second)
			n1 := strings.Count(e.daemonLog.String(), "\n")
			idlePerPodMin = float64(n1-n0) / 20
			b.Logf("idle log lines in 60 s at 20 pods: %d", n1-n0)
		}
	}
	rssAt[30] = settledRSS(b, pid)

	// Throughput: two pods over the tailnet, then over the bridge.
	a, c := pods[1], pods[2]
	tailnet := iperf(b, a, c, c.tailnetIPv4(b).String(), 5)
	plain := iperf(b, a, c, c.result.IPs[0].Address.IP.String(), 5)
	// Two stock tailscaled, each in a bridge-only netns of its own.
	plainConf := e.confList("")
	s1, s2 := e.newPod("stock1"), e.newPod("stock2")
	for _, p := range []*pod{s1, s2} {
		if _, err := e.cni.AddNetworkList(ctx, plainConf, e.rt(p)); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = e.cni.DelNetworkList(context.Background(), plainConf, e.rt(p)) })
	}
	stock := 0.0
	_, err1 := e.stockTailscaled(b, s1, 1)
	ip2, err2 := e.stockTailscaled(b, s2, 2)
	switch {
	case err1 != nil || err2 != nil:
		b.Errorf("stock tailscaled pair: %v %v", err1, err2)
	default:
		// Until s1 has s2 in its netmap, ping fails at once with "network
		// is unreachable"; retry for a while.
		var out []byte
		var err error
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if out, err = exec.Command("ip", "netns", "exec", s1.netns, "ping", "-c", "1", "-w", "5", ip2).CombinedOutput(); err == nil {
				break
			}
		}
		if err != nil {
			b.Errorf("stock tailscaled pair cannot ping: %v\n%s", err, out)
		} else {
			stock = iperf(b, s1, s2, ip2, 5)
		}
	}

	b.ReportMetric(percentile(addLat, 0.5).Seconds(), "add-p50-s")
	b.ReportMetric(percentile(addLat, 0.95).Seconds(), "add-p95-s")
	b.ReportMetric(percentile(readyLat, 0.5).Seconds(), "ready-p50-s")
	b.ReportMetric(percentile(readyLat, 0.95).Seconds(), "ready-p95-s")
	for _, n := range []int{1, 10, 30} {
		b.ReportMetric(float64(rssAt[n].total-rss0.total)/1024/float64(n), fmt.Sprintf("MiB/pod@%d", n))
		b.ReportMetric(float64(rssAt[n].anon-rss0.anon)/1024/float64(n), fmt.Sprintf("anon-MiB/pod@%d", n))
	}
	b.ReportMetric(idlePerPodMin, "idle-log-lines/pod/min")
	b.ReportMetric(tailnet, "tailnet-Gbit/s")
	b.ReportMetric(plain, "bridge-veth-Gbit/s")
	b.ReportMetric(stock, "stock-tailscaled-Gbit/s")
	if stock > 0 {
		b.ReportMetric(tailnet/stock, "tailnet/stock")
	}
	b.Logf("ADD p50 %v p95 %v; ADD-to-reachable p50 %v p95 %v (20 pods)",
		percentile(addLat, 0.5).Round(time.Millisecond), percentile(addLat, 0.95).Round(time.Millisecond),
		percentile(readyLat, 0.5).Round(time.Millisecond), percentile(readyLat, 0.95).Round(time.Millisecond))
	b.Logf("daemon RSS %d MiB with no pods; %d/%d/%d MiB at 1/10/30 pods", rss0.total/1024, rssAt[1].total/1024, rssAt[10].total/1024, rssAt[30].total/1024)
	b.Logf("of which anonymous (not the binary's shared pages) %d MiB with no pods; %d/%d/%d MiB at 1/10/30 pods", rss0.anon/1024, rssAt[1].anon/1024, rssAt[10].anon/1024, rssAt[30].anon/1024)
	b.Logf("iperf3 5 s: tailnet pod->pod %.2f Gbit/s, bridge veth %.2f Gbit/s, stock tailscaled pair %.2f Gbit/s", tailnet, plain, stock)

	for _, p := range pods {
		if err := e.del(ctx, p); err != nil {
			b.Errorf("DEL %s: %v", p.name, err)
		}
	}
}
