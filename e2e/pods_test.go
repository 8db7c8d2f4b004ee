package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// podSpec is every pod's spec in the pods test: the test app.
const podSpec = `spec:
  terminationGracePeriodSeconds: 5
  containers:
    - name: testapp
      image: ` + testappImage + `
      imagePullPolicy: Never
      ports: [{containerPort: 8080}]
      readinessProbe:
        httpGet: {path: /healthz, port: 8080}
        periodSeconds: 2
`

// podsManifest is the pods test's Service and pods, by name with their
// labels and annotations (YAML flow maps).
func podsManifest() string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 8080, targetPort: 8080}]\n")
	for _, p := range []struct{ name, labels, annotations string }{
		{"web", "{app: web}", `{tailscale.com/tags: "` + podsTagOwned + `", tailscale.com/hostname: web-1}`},
		{"client", "{}", "{}"},
		{"swept", "{}", "{}"},
		{"optout", "{}", `{tailscale.com/cni: "false"}`},
		{"refused", "{}", `{tailscale.com/tags: "tag:nobody-owns"}`},
	} {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  labels: %s\n  annotations: %s\n%s", p.name, p.labels, p.annotations, podSpec)
	}
	return b.String()
}

// TestPodsOnNode: on the real node with the chart's defaults, pods resolve
// tailnet names through MagicDNS and cluster names through the cluster
// DNS; annotations choose a pod's tags and hostname, a refused tag shows in
// kubelet's events, an opted-out pod has no ts0 and no node; 10 MB reach a
// pod over IPv6 from another pod and from outside; and the daemon's sweep
// removes a pod whose netns vanished without a DEL.
func TestPodsOnNode(t *testing.T) {
	c := node(t)
	ct := &cniTest{t: t, c: c, ns: "pods-e2e-" + randHex(3)}
	ct.snapshotHost()
	t.Cleanup(ct.cleanup)
	ownTag(t, c, podsTagOwned)
	ct.install(nil)
	ctx := ct.ctx(8 * time.Minute)

	s := startStep(t, "pods")
	if out, err := c.KubectlIn(ctx, strings.NewReader(podsManifest()), "apply", "-n", ct.ns, "-f", "-"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := c.Kubectl(ctx, "wait", "-n", ct.ns, "--for=condition=Ready", "pod/web", "pod/client", "pod/swept", "pod/optout", "--timeout=3m"); err != nil {
		desc, _ := c.Kubectl(ctx, "describe", "pods", "-n", ct.ns)
		t.Fatalf("pods not ready: %v: %s\n%s", err, out, desc)
	}
	s.done()
	nets, err := podNets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]podNet{}
	for _, name := range []string{"web", "client", "swept", "optout"} {
		ip, err := c.Kubectl(ctx, "get", "pod", "-n", ct.ns, name, "-o", "jsonpath={.status.podIP}")
		if err != nil {
			t.Fatal(err)
		}
		p, ok := nets[netip.MustParseAddr(strings.TrimSpace(ip))]
		if !ok {
			t.Fatalf("no netns holds pod %s's %s", name, ip)
		}
		pods[name] = p
		t.Logf("pod %s: netns %s, eth0 %v, ts0 %v", name, p.netns, p.eth0, p.ts0)
	}
	web, client := pods["web"], pods["client"]

	// 2. Annotations.
	s = startStep(t, "annotations")
	nodes, err := headscaleNodes(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, n := range nodes {
		switch {
		case n.Name == "web-1":
			found = true
			t.Logf("Headscale: node %s tags %v addresses %v", n.Name, n.Tags, n.Addresses)
			if !slices.Equal(n.Tags, []string{podsTagOwned}) || !slices.Contains(n.Addresses, web.tailnet4()) {
				t.Errorf("web-1 has tags %v and addresses %v, want [%s] and %v", n.Tags, n.Addresses, podsTagOwned, web.tailnet4())
			}
		case strings.Contains(n.Name, "-optout") || strings.Contains(n.Name, "-refused"):
			t.Errorf("Headscale has node %s", n.Name)
		}
	}
	if !found {
		t.Errorf("no node web-1 in Headscale")
	}
	if pods["optout"].hasTS {
		t.Errorf("opted-out pod has ts0 %v", pods["optout"].ts0)
	} else {
		t.Logf("opted-out pod: eth0 %v, no ts0, no node", pods["optout"].eth0)
	}
	var event string
	if err := poll(ctx, 2*time.Second, func() error {
		out, err := c.Kubectl(ctx, "get", "events", "-n", ct.ns, "--field-selector", "involvedObject.name=refused,reason=FailedCreatePodSandBox", "-o", "jsonpath={.items[*].message}")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "tag:nobody-owns") {
			return fmt.Errorf("no event naming tag:nobody-owns yet: %q", out)
		}
		event = out
		return nil
	}); err != nil {
		t.Fatalf("refused pod: %v", err)
	}
	t.Logf("kubelet's event for pod refused: %s", tail(event, 600))
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Count(string(out), ": tst") != 3 {
		t.Errorf("the node has %d pod TUNs, want 3 (web, client, swept; none for refused)", strings.Count(string(out), ": tst"))
	}
	s.done()

	// 1. MagicDNS, through glibc in the client's netns with the
	// resolv.conf kubelet writes, and through the client's own resolver.
	s = startStep(t, "magicdns")
	fqdn := "web-1." + magicDNS
	for _, name := range []string{"web-1", fqdn} {
		var got string
		var took time.Duration
		if err := poll(ctx, time.Second, func() error {
			got, took = podGetent(t, client.netns, ct.ns, name)
			if got != web.tailnet4().String() {
				return fmt.Errorf("%s = %q", name, got)
			}
			return nil
		}); err != nil {
			t.Fatalf("client resolving %s: %v", name, err)
		}
		t.Logf("in client: getent hosts %s -> %s in %v", name, got, took.Round(time.Millisecond))
	}
	svcIP, err := c.Kubectl(ctx, "get", "service", "-n", ct.ns, "web", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		t.Fatal(err)
	}
	got, took := podGetent(t, client.netns, ct.ns, "web")
	if got != strings.TrimSpace(svcIP) {
		t.Errorf("in client: getent hosts web = %q, want the Service's %s from the cluster DNS", got, svcIP)
	}
	t.Logf("in client: getent hosts web -> %s in %v (Service %s/web through the cluster DNS)", got, took.Round(time.Millisecond), ct.ns)
	got, took = podGetent(t, client.netns, ct.ns, "nosuch."+magicDNS)
	if got != "" {
		t.Errorf("in client: nosuch.%s = %s", magicDNS, got)
	}
	t.Logf("in client: getent hosts nosuch.%s -> not found in %v (3 search domains, then NXDOMAIN from the tailnet)", magicDNS, took.Round(time.Millisecond))
	for _, target := range []string{"http://web-1:8080/healthz", "http://" + fqdn + ":8080/healthz", "http://web." + ct.ns + ":8080/healthz"} {
		r, err := podFetch(ctx, client.eth0, target, 15*time.Second)
		if err != nil {
			t.Errorf("client fetching %s: %v", target, err)
			continue
		}
		t.Logf("client's testapp fetched %s (its own resolver, kubelet's resolv.conf) in %.3fs", target, r.Seconds)
	}
	if _, err := podFetch(ctx, client.eth0, "http://nosuch."+magicDNS+":8080/", 15*time.Second); err == nil || !strings.Contains(err.Error(), "no such host") {
		t.Errorf("client fetching nosuch.%s: %v, want no such host", magicDNS, err)
	}
	s.done()

	// 3. IPv6: 10 MB pod to pod and from outside, over fd7a:.
	s = startStep(t, "ipv6 10 MB")
	const size = 10 << 20
	want := patternSum(size)
	url6 := tailnetURL(web.tailnet6(), fmt.Sprintf("/bytes/%d", size))
	r, err := podFetch(ctx, client.eth0, url6, 60*time.Second)
	if err != nil || r.Bytes != size || r.SHA256 != want {
		t.Errorf("client fetching %s: %+v, %v; want %d bytes with sha256 %s", url6, r, err, size, want)
	} else {
		t.Logf("pod to pod over IPv6: %d bytes from %s in %.3fs, sha256 %s matches", r.Bytes, url6, r.Seconds, r.SHA256[:16])
	}
	outside, _ := c.Headscale.NewNode(t, headscaletest.NodeOptions{Hostname: "outside-" + ct.ns, Tags: []string{headscaletest.TagTest}, Ephemeral: true})
	var n int64
	var sum string
	start := time.Now()
	if err := poll(ctx, time.Second, func() error {
		fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		start = time.Now()
		n, sum, err = sumOver(fctx, dialerClient(outside.Dial), url6)
		return err
	}); err != nil || n != size || sum != want {
		t.Errorf("outside fetching %s: %d bytes, sha256 %s, %v", url6, n, sum, err)
	} else {
		t.Logf("tsnet node outside to pod over IPv6: %d bytes in %v, sha256 %s matches", n, time.Since(start).Round(time.Millisecond), sum[:16])
	}
	s.done()

	// 4. The sweep: the netns goes without a DEL.
	s = startStep(t, "sweep")
	sweptName := clusterName + "-" + ct.ns + "-swept"
	if _, ok := nodeNamed(ctx, t, ct, sweptName); !ok {
		t.Fatalf("no node %s before the sweep", sweptName)
	}
	if out, err := exec.Command("ip", "netns", "del", pods["swept"].netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", pods["swept"].netns, err, out)
	}
	gone := time.Now()
	if err := poll(ctx, time.Second, func() error {
		if _, ok := nodeNamed(ctx, t, ct, sweptName); ok {
			return fmt.Errorf("node %s still there after %v", sweptName, time.Since(gone).Round(time.Second))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	took = time.Since(gone)
	if took > time.Minute {
		t.Errorf("the sweep took %v, more than a minute", took)
	}
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	t.Logf("the sweep removed pod swept's node %s %v after its netns went; pod TUNs left: %d", sweptName, took.Round(time.Second), strings.Count(string(out), ": tst"))
	if pod, err := ct.daemonPod(ctx); err == nil {
		logs, _ := c.Kubectl(ctx, "logs", "-n", ct.ns, pod, "-c", "daemon")
		for _, l := range linesWith(logs, "swept") {
			if strings.Contains(l, "sweep") || strings.Contains(l, "DEL") || strings.Contains(l, "removing") {
				t.Logf("daemon: %s", l)
			}
		}
	}
	if resp, err := http.Get("http://127.0.0.1:9392/metrics"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "tailscale_cni_dns_queries_total") || strings.HasPrefix(l, "tailscale_cni_removed_total") {
				t.Logf("daemon metric: %s", l)
			}
		}
	}
	s.done()
}

// nodeNamed finds a Headscale node by name.
func nodeNamed(ctx context.Context, t *testing.T, ct *cniTest, name string) (string, bool) {
	t.Helper()
	nodes, err := headscaleNodes(ctx, ct.c)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name == name {
			return n.ID, true
		}
	}
	return "", false
}
