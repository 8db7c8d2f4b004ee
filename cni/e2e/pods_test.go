package e2e

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/dns/dnsmessage"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/proto/contract"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// deviceOf finds p's node in Headscale by its tailnet IPv4, or nil.
func (e *env) deviceOf(t testing.TB, p *pod) *controlplane.Device {
	t.Helper()
	ip := p.tailnetIPv4(t).String()
	for _, d := range devicesByID(t, e.cp) {
		for _, a := range d.Addresses {
			if a.String() == ip {
				return &d
			}
		}
	}
	return nil
}

// hasTS0 reports whether p's netns has a ts0 link.
func hasTS0(t testing.TB, p *pod) bool {
	t.Helper()
	found := false
	err := ns.WithNetNSPath(p.path(), func(ns.NetNS) error {
		_, err := netlink.LinkByName("ts0")
		found = err == nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// settledCounts waits until the host's counts stay the same for a second
// (peers' routes arrive in each pod's table as netmaps spread) and
// returns them.
func (e *env) settledCounts(t testing.TB) counts {
	t.Helper()
	last := e.counts(t)
	for range 30 {
		time.Sleep(time.Second)
		c := e.counts(t)
		if c == last {
			return c
		}
		last = c
	}
	t.Fatalf("host objects never settled: last %v", last)
	return last
}

// loAddrs lists the IPv4 addresses on p's lo.
func loAddrs(t testing.TB, p *pod) []string {
	t.Helper()
	var out []string
	err := ns.WithNetNSPath(p.path(), func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		as, err := netlink.AddrList(lo, netlink.FAMILY_V4)
		for _, a := range as {
			out = append(out, a.IP.String())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tailnetIPv6 returns the pod's fd7a: address from its ADD result.
func (p *pod) tailnetIPv6(t testing.TB) net.IP {
	t.Helper()
	for _, ip := range p.result.IPs {
		if ip.Interface != nil && p.result.Interfaces[*ip.Interface].Name == "ts0" && ip.Address.IP.To4() == nil {
			return ip.Address.IP
		}
	}
	t.Fatalf("pod %s: no ts0 IPv6 in result %s", p.name, mustJSON(p.result))
	return nil
}

// TestPodsMagicDNSAndAnnotations: pods resolve tailnet names (short and
// FQDN) through their own node's MagicDNS and everything else through the
// cluster's DNS, with their resolv.conf as kubelet wrote it; annotations
// choose a pod's tags and hostname, a refused tag fails ADD naming it and
// leaves nothing behind, and an opted-out pod gets no ts0 and no node.
func TestPodsMagicDNSAndAnnotations(t *testing.T) {
	api, apiEnv := startFakeAPIServer(t)
	id := randHex(3)
	dns := startClusterDNS(t, id, 100+int(id[0])%100)
	e := newEnv(t, append(apiEnv, "TS_CNI_CLUSTER_DNS="+dns.addr)...)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	before := e.counts(t)

	web, client, refused, optout := e.newPod("web"), e.newPod("client"), e.newPod("refused"), e.newPod("optout")
	api.setPod(web.ns, web.name, map[string]string{contract.AnnotationTags: headscaletest.TagTest, contract.AnnotationHostname: "web-1"})
	api.setPod(client.ns, client.name, map[string]string{})
	api.setPod(refused.ns, refused.name, map[string]string{contract.AnnotationTags: "tag:nobody-owns"})
	api.setPod(optout.ns, optout.name, map[string]string{contract.AnnotationCNI: "false"})
	for _, p := range []*pod{web, client} {
		if _, err := e.add(ctx, p); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
		podResolvConf(t, p, dns.addr)
	}

	// Annotations: the node is web-1 with exactly the pod's tag.
	d := e.deviceOf(t, web)
	if d == nil || d.Name != "web-1" || !slices.Equal(d.Tags, []string{headscaletest.TagTest}) {
		t.Fatalf("web's node = %+v, want name web-1 with tags [%s]", d, headscaletest.TagTest)
	}
	t.Logf("Headscale shows web as %s tags %v (%v)", d.Name, d.Tags, d.Addresses)

	// A refused tag: a CNI error naming the tag, nothing left behind.
	mid := e.settledCounts(t)
	nodes := len(devicesByID(t, e.cp))
	_, err := e.add(ctx, refused)
	var ce *types.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Error(), "tag:nobody-owns") {
		t.Fatalf("ADD with a tag the policy does not let us own: %v; want a CNI error naming tag:nobody-owns", err)
	}
	t.Logf("ADD refused: code %d: %s", ce.Code, ce.Error())
	_ = e.del(ctx, refused) // as the runtime does after a failed ADD (the bridge's part)
	if got := e.settledCounts(t); got != mid {
		t.Errorf("after the refused ADD: %v, want %v", got, mid)
	}
	if n := len(devicesByID(t, e.cp)); n != nodes {
		t.Errorf("Headscale has %d nodes after the refused ADD, want %d", n, nodes)
	}

	// Opted out: prevResult untouched, no ts0, no node; CHECK and DEL agree.
	res, err := e.add(ctx, optout)
	if err != nil {
		t.Fatalf("ADD of the opted-out pod: %v", err)
	}
	for _, i := range res.Interfaces {
		if i.Name == "ts0" {
			t.Fatalf("opted-out pod's result has ts0: %s", mustJSON(res))
		}
	}
	if hasTS0(t, optout) {
		t.Fatal("opted-out pod has a ts0")
	}
	if n := len(devicesByID(t, e.cp)); n != nodes {
		t.Errorf("Headscale has %d nodes after the opted-out pod, want %d", n, nodes)
	}
	c, err := libcni.NetworkPluginConfFromBytes([]byte(`{"cniVersion":"1.0.0","name":"` + e.conf.Name + `","type":"tailscale-cni","daemonSocket":"` + e.socket + `","prevResult":` + mustJSON(res) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cni.CheckNetwork(ctx, c, e.rt(optout)); err != nil {
		t.Errorf("CHECK of the opted-out pod: %v", err)
	}
	t.Logf("opted-out pod: interfaces %s, no ts0, no node, CHECK ok", mustJSON(res.Interfaces))

	// MagicDNS: short name and FQDN of another pod, through glibc and the
	// pod's resolv.conf (nameserver = the cluster DNS).
	fqdn := "web-1.tsymbiote.test"
	want := web.tailnetIPv4(t).String()
	for _, name := range []string{"web-1", fqdn} {
		var got string
		var took time.Duration
		// The first netmap with web in it may be a moment behind ADD.
		waitFor(t, "client resolving "+name, 30*time.Second, func() bool {
			got, took = getent(t, client, name)
			return got == want
		})
		t.Logf("client: getent hosts %s = %s in %v", name, got, took.Round(time.Millisecond))
	}
	// A tailnet device that is no pod.
	outside, _ := e.hs.NewNode(t, headscaletest.NodeOptions{Hostname: "outside-" + e.id, Tags: []string{headscaletest.TagTest}})
	ost, err := outside.Up(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "client resolving outside", 30*time.Second, func() bool {
		got, _ := getent(t, client, "outside-"+e.id)
		return got == ost.TailscaleIPs[0].String()
	})
	t.Logf("client: getent hosts outside-%s = %v", e.id, ost.TailscaleIPs[0])
	// A cluster Service name still resolves through the cluster's DNS.
	asked := dns.queries.Load()
	got, took := getent(t, client, "kube-dns.kube-system")
	if got != serviceIP || dns.queries.Load() == asked {
		t.Fatalf("client: getent hosts kube-dns.kube-system = %q (cluster DNS asked %d times), want %s from the cluster DNS", got, dns.queries.Load()-asked, serviceIP)
	}
	t.Logf("client: getent hosts kube-dns.kube-system = %s in %v (through the cluster DNS)", got, took.Round(time.Millisecond))
	// An unknown tailnet name: NXDOMAIN from the pod's node, without the
	// cluster DNS.
	asked = dns.queries.Load()
	m, took := queryIn(t, client, dns.addr, "nosuch."+"tsymbiote.test.", dnsmessage.TypeA)
	if m.RCode != dnsmessage.RCodeNameError || dns.queries.Load() != asked {
		t.Fatalf("nosuch.tsymbiote.test: rcode %v (cluster DNS asked %d times), want NXDOMAIN from the tailnet", m.RCode, dns.queries.Load()-asked)
	}
	t.Logf("client: nosuch.tsymbiote.test -> %v in %v", m.RCode, took.Round(time.Microsecond))
	gotN, tookN := getent(t, client, "nosuch.tsymbiote.test")
	if gotN != "" {
		t.Fatalf("getent hosts nosuch.tsymbiote.test = %s", gotN)
	}
	t.Logf("client: getent hosts nosuch.tsymbiote.test: not found in %v (ndots:5 tries the 3 search domains first)", tookN.Round(time.Millisecond))
	// 100.100.100.100 answers too, and the pod's own resolv.conf is as it was.
	m, _ = queryIn(t, client, "100.100.100.100", fqdn+".", dnsmessage.TypeA)
	if len(m.Answers) != 1 || netip.AddrFrom4(m.Answers[0].Body.(*dnsmessage.AResource).A).String() != want {
		t.Fatalf("100.100.100.100 for %s: %+v", fqdn, m)
	}
	if b, _ := os.ReadFile(filepath.Join("/etc/netns", client.netns, "resolv.conf")); !strings.Contains(string(b), "nameserver "+dns.addr) {
		t.Fatalf("client's resolv.conf changed:\n%s", b)
	}

	// A daemon restarted with MagicDNS off takes the DNS addresses off the
	// pods' lo: nobody would answer there any more.
	if !slices.Contains(loAddrs(t, client), dns.addr) {
		t.Fatalf("client's lo lacks %s: %v", dns.addr, loAddrs(t, client))
	}
	e.stopDaemon(false)
	e.extraEnv = apiEnv
	e.startDaemon()
	if got := loAddrs(t, client); slices.Contains(got, dns.addr) || slices.Contains(got, "100.100.100.100") {
		t.Errorf("after a restart with MagicDNS off, client's lo still has %v", got)
	} else {
		t.Logf("after a restart with MagicDNS off, client's lo holds %v", got)
	}

	webDev, clientDev := e.deviceOf(t, web), e.deviceOf(t, client)
	for _, p := range []*pod{web, client, optout} {
		if err := e.del(ctx, p); err != nil {
			t.Fatalf("DEL %s: %v", p.name, err)
		}
	}
	devs := devicesByID(t, e.cp)
	for _, d := range []*controlplane.Device{webDev, clientDev} {
		if _, ok := devs[d.ID]; ok {
			t.Errorf("node %s (%s) still in Headscale after DEL", d.ID, d.Name)
		}
	}
	if after := e.counts(t); after != before {
		t.Errorf("host objects differ: before %v, after %v", before, after)
	}
}

// TestPodsIPv6: 10 MB pod to pod and from an outside tsnet node to a pod,
// over the fd7a: addresses.
func TestPodsIPv6(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, b := e.newPod("v6-a"), e.newPod("v6-b")
	for _, p := range []*pod{a, b} {
		if _, err := e.add(ctx, p); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
	}
	b6 := b.tailnetIPv6(t)
	if !netip.MustParsePrefix("fd7a:115c:a1e0::/48").Contains(netip.MustParseAddr(b6.String())) {
		t.Fatalf("pod b's IPv6 %v is not in fd7a:115c:a1e0::/48", b6)
	}
	ln := listenIn(t, b, "[::]:5202")
	sums := sinkSums(ln)
	var conn net.Conn
	var err error
	waitFor(t, "a dialing b over IPv6", 30*time.Second, func() bool {
		conn, err = dialFrom(a, net.JoinHostPort(b6.String(), "5202"))
		return err == nil
	})
	t.Logf("pod a -> pod b [%v]:5202", b6)
	send10MB(t, conn, sums)

	outside, _ := e.hs.NewNode(t, headscaletest.NodeOptions{Hostname: "outside6-" + e.id, Tags: []string{headscaletest.TagTest}})
	var oc net.Conn
	waitFor(t, "outside dialing b over IPv6", 30*time.Second, func() bool {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		defer dcancel()
		oc, err = outside.Dial(dctx, "tcp", net.JoinHostPort(b6.String(), "5202"))
		return err == nil
	})
	t.Logf("tsnet node outside -> pod b [%v]:5202", b6)
	send10MB(t, oc, sums)
	for _, p := range []*pod{a, b} {
		if err := e.del(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
}

// gcConfList is the test's conflist at CNI 1.1.0, the first version with
// GC.
func (e *env) gcConfList(t testing.TB) *libcni.NetworkConfigList {
	t.Helper()
	raw := strings.Replace(string(e.conf.Bytes), `"cniVersion": "1.0.0"`, `"cniVersion": "1.1.0"`, 1)
	c, err := libcni.ConfListFromBytes([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPodsGCAndSweep: a sandbox killed so that DEL never comes is removed
// by the runtime's GC (libcni's GCNetworkList, as CRI-O calls it) while
// the live pod GC lists is untouched; without any GC, the daemon's sweep
// removes a pod whose netns is gone.
func TestPodsGCAndSweep(t *testing.T) {
	e := newEnv(t, "TS_CNI_SWEEP_INTERVAL=5s")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e.conf = e.gcConfList(t)
	before := e.counts(t)
	live, killed, swept := e.newPod("live"), e.newPod("killed"), e.newPod("swept")
	for _, p := range []*pod{live, killed, swept} {
		if _, err := e.add(ctx, p); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
	}
	liveDev, killedDev := e.deviceOf(t, live), e.deviceOf(t, killed)

	// The sandbox dies and the runtime forgets it: its netns and its
	// libcni cache entry go, so neither DEL nor libcni's own DEL of cached
	// attachments reaches the daemon. Only our GC verb can clean up.
	if out, err := exec.Command("ip", "netns", "del", killed.netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	cached, _ := filepath.Glob(filepath.Join(e.dir, "cache", "results", "*"+killed.id+"*"))
	for _, f := range cached {
		os.Remove(f)
	}
	// Keep the sweep out of this part: the GC must do it. The sweep runs
	// every 5 s; GC comes at once.
	start := time.Now()
	valid := []types.GCAttachment{{ContainerID: live.id, IfName: "eth0"}, {ContainerID: swept.id, IfName: "eth0"}}
	if err := e.cni.GCNetworkList(ctx, e.conf, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GCNetworkList: %v", err)
	}
	t.Logf("GCNetworkList with %d valid attachments took %v", len(valid), time.Since(start).Round(time.Millisecond))
	devs := devicesByID(t, e.cp)
	if _, ok := devs[killedDev.ID]; ok {
		t.Errorf("killed pod's node %s still in Headscale after GC", killedDev.ID)
	}
	if _, ok := devs[liveDev.ID]; !ok {
		t.Errorf("live pod's node %s gone after GC", liveDev.ID)
	}
	if !strings.Contains(e.daemonLog.String(), "gc: removing pod e2e/killed") {
		t.Errorf("the daemon's GC did not remove the killed pod (sweep first?):\n%s", e.daemonLog.String())
	}
	// The live pod is untouched: still reachable, CHECK passes, and a
	// second GC listing it does nothing.
	ping(t, swept, live.tailnetIPv4(t), 30*time.Second)
	if err := e.check(ctx, live); err != nil {
		t.Errorf("CHECK live after GC: %v", err)
	}
	if err := e.cni.GCNetworkList(ctx, e.conf, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("second GCNetworkList: %v", err)
	}
	if err := e.check(ctx, live); err != nil {
		t.Errorf("CHECK live after a second GC: %v", err)
	}

	// No GC at all: the netns goes, and the sweep removes the rest.
	sweptDev := e.deviceOf(t, swept)
	if out, err := exec.Command("ip", "netns", "del", swept.netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	took := waitFor(t, "sweep of the pod whose netns is gone", time.Minute, func() bool {
		_, ok := devicesByID(t, e.cp)[sweptDev.ID]
		return !ok
	})
	t.Logf("sweep removed pod swept (node %s) %v after its netns went", sweptDev.ID, took.Round(time.Millisecond))

	if err := e.del(ctx, live); err != nil {
		t.Fatal(err)
	}
	// The bridge's side of the vanished pods (its veths went with their
	// netns; host-local's leases stay until DEL): as the runtime's DEL.
	for _, p := range []*pod{killed, swept} {
		_ = e.cni.DelNetworkList(ctx, e.conf, e.rt(p))
	}
	if after := e.counts(t); after != before {
		t.Errorf("host objects differ: before %v, after %v", before, after)
	}
}
