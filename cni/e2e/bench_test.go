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
// server runs in server's netns) and returns Gbit/s received. It has a
// deadline: an iperf3 client whose path breaks mid-run waits for its
// results for ever.
func iperf(b testing.TB, client, server *pod, addr string, secs int) float64 {
	b.Helper()
	srv := exec.Command("ip", "netns", "exec", server.netns, "iperf3", "-s", "-1", "-B", addr)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
	defer cancel()
	var out []byte
	var err error
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		out, err = exec.CommandContext(ctx, "ip", "netns", "exec", client.netns, "iperf3", "-c", addr, "-t", strconv.Itoa(secs), "-J").Output()
		if err == nil || ctx.Err() != nil {
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
		b.Fatalf("iperf3 output: %v\n%s", err, out)
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
	e.mu.Lock()
	if e.stock == nil {
		e.stock = map[int]*testkit.Process{}
	}
	e.stock[n] = proc
	e.mu.Unlock()
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

// BenchmarkCNI measures one node at scale, in one run (see nodeBench for
// its phases and knobs): ADD latency and ADD-to-reachable from a peer pod,
// the daemon's RSS per extra pod at 1, 10, 30 and 110 pods and its
// anonymous memory per pod at 110, the idle daemon's CPU and log lines at
// 110 pods, the time a SIGKILLed daemon takes to bring every pod back, and
// pod-to-pod throughput against a pair of stock tailscaled. It prints
// figures and asserts no timing. Run it with -benchtime 1x; it takes about
// a quarter of an hour at 110 pods.
func BenchmarkCNI(b *testing.B) {
	nb := newNodeBench(b)
	nb.latency()
	nb.fill()
	nb.idle()
	nb.restart()
	nb.throughput()
	nb.report()
	nb.deleteAll()
}
