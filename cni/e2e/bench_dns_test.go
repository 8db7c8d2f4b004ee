package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/dns/dnsmessage"
)

// heapAlloc reads the daemon's live heap (go_memstats_heap_alloc_bytes)
// from its metrics; settledRSS just waited past the daemon's periodic
// collection, so it is close to what is live. Far steadier than RSS.
func heapAlloc(b *testing.B, addr string) int64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, "go_memstats_heap_alloc_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return int64(f)
		}
	}
	b.Fatal("no go_memstats_heap_alloc_bytes in the daemon's metrics")
	return 0
}

// queryInOK asks server:53 from inside p's netns for name's A record and
// returns the first address, or "" and why not.
func queryInOK(p *pod, server, name string) (string, error) {
	q, err := (&dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 99, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}).Pack()
	if err != nil {
		return "", err
	}
	var c net.Conn
	if err := ns.WithNetNSPath(p.path(), func(ns.NetNS) error {
		c, err = net.Dial("udp", net.JoinHostPort(server, "53"))
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(q); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil {
		return "", err
	}
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			return netip.AddrFrom4(r.A).String(), nil
		}
	}
	return "", fmt.Errorf("no answer (rcode %v)", m.RCode)
}

// dnsModes are the ways of serving MagicDNS the benchmark compares: none,
// the daemon's (--cluster-dns), and a netstack per pod serving
// 100.100.100.100 through ts0 as tailscaled in TUN mode does.
var dnsModes = []string{"off", "daemon", "netstack"}

// BenchmarkCNIMagicDNS prints the daemon's RSS per extra pod without and
// with MagicDNS in pods, 10 pods each, in daemons one after the other on
// the same host, each pod having resolved a tailnet name (and, with the
// daemon's DNS, a cluster name) once. `make bench-cni` runs it after
// BenchmarkCNI.
func BenchmarkCNIMagicDNS(b *testing.B) {
	const pods = 10
	perPod := map[string]rss{}
	heapPerPod := map[string]int64{} // bytes
	for _, mode := range dnsModes {
		var extra []string
		var dns *clusterDNS
		withDNS := mode == "daemon"
		switch mode {
		case "daemon":
			id := randHex(3)
			dns = startClusterDNS(b, id, 100+int(id[0])%100)
			extra = []string{"TS_CNI_CLUSTER_DNS=" + dns.addr}
		case "netstack":
			extra = []string{"TS_CNI_DEBUG_NETSTACK=1"}
		}
		e := newEnv(b, extra...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		pid := e.daemon.PID()
		rss0 := settledRSS(b, pid)
		heap0 := heapAlloc(b, e.metrics)
		var ps []*pod
		for i := range pods {
			p := e.newPod(fmt.Sprintf("m%02d", i))
			if _, err := e.add(ctx, p); err != nil {
				b.Fatalf("ADD %s: %v", p.name, err)
			}
			ps = append(ps, p)
		}
		if mode == "netstack" {
			// Every pod asks 100.100.100.100, through ts0, for a peer.
			first := e.deviceOf(b, ps[0])
			for _, p := range ps[1:] {
				waitFor(b, p.name+" resolving "+first.Name+" at 100.100.100.100", 30*time.Second, func() bool {
					m, _ := queryInOK(p, "100.100.100.100", first.Name+".tsymbiote.test.")
					return m == ps[0].tailnetIPv4(b).String()
				})
			}
		}
		if withDNS {
			// Every pod resolves a tailnet name (its first peer's) and a
			// cluster name, so that the DNS paths have run.
			first := e.deviceOf(b, ps[0])
			for _, p := range ps[1:] {
				podResolvConf(b, p, dns.addr)
				waitFor(b, p.name+" resolving "+first.Name, 30*time.Second, func() bool {
					got, _ := getent(b, p, first.Name)
					return got == ps[0].tailnetIPv4(b).String()
				})
				if got, _ := getent(b, p, "kube-dns.kube-system"); got != serviceIP {
					b.Fatalf("%s: kube-dns.kube-system = %q", p.name, got)
				}
			}
		}
		r := settledRSS(b, pid)
		heap := heapAlloc(b, e.metrics)
		per := rss{total: (r.total - rss0.total) / pods, anon: (r.anon - rss0.anon) / pods}
		perPod[mode] = per
		heapPerPod[mode] = (heap - heap0) / pods
		b.Logf("MagicDNS %s: daemon RSS %d KiB with no pods, %d KiB at %d pods: %d KiB per pod (anonymous %d KiB); live heap %d KiB per pod",
			mode, rss0.total, r.total, pods, per.total, per.anon, heapPerPod[mode]/1024)
		for _, p := range ps {
			if err := e.del(ctx, p); err != nil {
				b.Errorf("DEL %s: %v", p.name, err)
			}
		}
		cancel()
		e.stopDaemon(false)
	}
	off, on, ns := perPod["off"], perPod["daemon"], perPod["netstack"]
	mib := func(kib int) float64 { return float64(kib) / 1024 }
	b.ReportMetric(mib(off.total), "MiB/pod-without-dns")
	b.ReportMetric(mib(on.total), "MiB/pod-with-dns")
	b.ReportMetric(mib(on.total-off.total), "dns-MiB/pod")
	b.ReportMetric(mib(on.anon-off.anon), "dns-anon-MiB/pod")
	b.ReportMetric(mib(ns.total-off.total), "netstack-dns-MiB/pod")
	heapMiB := func(m string) float64 { return float64(heapPerPod[m]-heapPerPod["off"]) / (1 << 20) }
	b.ReportMetric(heapMiB("daemon"), "dns-heap-MiB/pod")
	b.ReportMetric(heapMiB("netstack"), "netstack-dns-heap-MiB/pod")
	b.Logf("live Go heap per extra pod: %.2f MiB without MagicDNS; the daemon's MagicDNS adds %+.3f MiB, a netstack per pod %+.3f MiB",
		float64(heapPerPod["off"])/(1<<20), heapMiB("daemon"), heapMiB("netstack"))
	b.Logf("RSS per extra pod at %d pods: %.2f MiB without MagicDNS, %.2f MiB with the daemon's (anonymous %.2f / %.2f): it costs %+.2f MiB per pod (%+.2f anonymous); a netstack per pod instead: %.2f MiB (%+.2f, anonymous %+.2f)",
		pods, mib(off.total), mib(on.total), mib(off.anon), mib(on.anon),
		mib(on.total-off.total), mib(on.anon-off.anon), mib(ns.total), mib(ns.total-off.total), mib(ns.anon-off.anon))
}
