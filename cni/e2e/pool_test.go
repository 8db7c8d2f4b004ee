package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/proto/contract"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// poolStatus reads the daemon's pool line from /healthz ("pool 2/2 ready
// (0 starting)"), or "" when it cannot.
func (e *env) poolStatus() string {
	resp, err := http.Get("http://" + e.metrics + "/healthz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(l, "pool ") {
			return l
		}
	}
	return ""
}

// waitPoolReady waits until the pool holds n ready nodes and returns how
// long that took.
func (e *env) waitPoolReady(t testing.TB, n int) time.Duration {
	t.Helper()
	want := "pool " + strconv.Itoa(n) + "/" + strconv.Itoa(n) + " ready"
	return waitFor(t, "pool: "+want, 2*time.Minute, func() bool { return strings.HasPrefix(e.poolStatus(), want) })
}

// poolNodes are the nodes Headscale holds for the daemon's pool (named
// {cluster}-pool-<id> until a pod takes one), by ID.
func (e *env) poolNodes(t testing.TB) []string {
	var out []string
	for id, d := range devicesByID(t, e.cp) {
		if strings.HasPrefix(d.Name, "e2e"+e.id+"-pool-") {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// firstPing pings dst from p every 10 ms until the first answer, or
// fails after timeout; it returns when the answer came.
func firstPing(t testing.TB, p *pod, dst net.IP, timeout time.Duration) time.Time {
	t.Helper()
	secs := strconv.Itoa(int(timeout.Seconds()))
	out, err := exec.Command("ip", "netns", "exec", p.netns, "ping", "-n", "-q", "-c", "1", "-i", "0.01", "-w", secs, dst.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("pod %s cannot ping %s within %v: %v\n%s", p.name, dst, timeout, err, out)
	}
	return time.Now()
}

// podRecordOf reads the daemon's record of p.
func (e *env) podRecordOf(t testing.TB, p *pod) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "state", "pods", p.id, "pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestPool runs the daemon with a pool of 2 against Headscale with its
// default batching: ADDs take pool nodes (and print their latency and
// time to reachable from a peer pod), the nodes get the pods' names in
// Headscale, the pool refills, a pod with its own tags takes the slow
// path, and a daemon killed with SIGKILL leaves no pool node behind once
// restarted, with a pool and without. It makes 4 pool ADDs (a refill
// takes about 5 s); TSCNI_POOL_ADDS=20 makes more, for the figures.
func TestPool(t *testing.T) {
	api, apiEnv := startFakeAPIServer(t)
	e := newEnvWith(t, envOptions{defaultBatching: true}, append(apiEnv, "TS_CNI_POOL_SIZE=2")...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	took := e.waitPoolReady(t, 2)
	t.Logf("pool of 2 ready %v after the daemon was", took.Round(time.Millisecond))

	peer := e.newPod("peer")
	api.setPod(peer.ns, peer.name, map[string]string{})
	if _, err := e.add(ctx, peer); err != nil {
		t.Fatalf("ADD peer: %v", err)
	}
	pods := []*pod{peer}
	adds := 4
	if n, err := strconv.Atoi(os.Getenv("TSCNI_POOL_ADDS")); err == nil && n > 0 {
		adds = n
	}
	var addTimes, readyTimes, refillTimes []time.Duration
	for i := range adds {
		e.waitPoolReady(t, 2)
		p := e.newPod("p" + strconv.Itoa(i))
		api.setPod(p.ns, p.name, map[string]string{})
		start := time.Now()
		if _, err := e.add(ctx, p); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
		addTimes = append(addTimes, time.Since(start))
		readyTimes = append(readyTimes, firstPing(t, peer, p.tailnetIPv4(t), 30*time.Second).Sub(start))
		e.waitPoolReady(t, 2)
		refillTimes = append(refillTimes, time.Since(start))
		if rec := e.podRecordOf(t, p); rec["poolID"] == nil {
			t.Errorf("ADD %s did not take a pool node: %v", p.name, rec)
		}
		pods = append(pods, p)
	}
	t.Logf("pool ADDs with Headscale's default batching, %d pods: ADD p50 %v p95 %v; reachable from a peer pod p50 %v p95 %v; pool refilled p50 %v after",
		adds, percentile(addTimes, 0.5), percentile(addTimes, 0.95), percentile(readyTimes, 0.5), percentile(readyTimes, 0.95), percentile(refillTimes, 0.5))

	// Each pool node carries its pod's name in Headscale once the rename
	// lands, and the pod's peer reaches it by that name's node.
	for _, p := range pods {
		want := "e2e" + e.id + "-" + p.ns + "-" + p.name
		waitFor(t, "node of "+p.name+" named "+want, time.Minute, func() bool {
			d := e.deviceOf(t, p)
			return d != nil && d.Name == want
		})
	}
	t.Logf("Headscale names all %d pods' nodes after their pods", len(pods))

	// Another tag than the daemon's: the slow path, a node of its own.
	tagged := e.newPod("tagged")
	api.setPod(tagged.ns, tagged.name, map[string]string{contract.AnnotationTags: headscaletest.TagTest})
	start := time.Now()
	if _, err := e.add(ctx, tagged); err != nil {
		t.Fatalf("ADD tagged: %v", err)
	}
	slow := time.Since(start)
	if rec := e.podRecordOf(t, tagged); rec["poolID"] != nil {
		t.Errorf("a pod with tags %s took a pool node: %v", headscaletest.TagTest, rec)
	}
	if d := e.deviceOf(t, tagged); d == nil || !slices.Equal(d.Tags, []string{headscaletest.TagTest}) {
		t.Errorf("tagged pod's node = %+v, want tags [%s]", d, headscaletest.TagTest)
	}
	if got := e.poolStatus(); !strings.HasPrefix(got, "pool 2/2 ready") {
		t.Errorf("the slow path changed the pool: %q", got)
	}
	pods = append(pods, tagged)
	t.Logf("slow path (tags %s): ADD %v", headscaletest.TagTest, slow.Round(time.Millisecond))

	// Fewer pods for the restarts below: with every pod's backend
	// logging, a restart's start-up lines would scroll out of the harness's
	// tail of the daemon's output before it looks for them.
	for _, p := range pods[1 : len(pods)-2] {
		if err := e.del(ctx, p); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
	pods = []*pod{peer, pods[len(pods)-2], tagged}

	// SIGKILL with a full pool, then a restart with a pool: the old pool
	// nodes are deleted, the pods come back with their nodes.
	podNodes := map[string]bool{}
	for _, p := range pods {
		if d := e.deviceOf(t, p); d != nil {
			podNodes[d.ID] = true
		}
	}
	old := e.poolNodes(t)
	if len(old) != 2 {
		t.Fatalf("pool nodes in Headscale before the kill: %v, want 2", old)
	}
	e.stopDaemon(true)
	e.startDaemon()
	e.waitPoolReady(t, 2)
	now := e.poolNodes(t)
	for _, id := range old {
		if slices.Contains(now, id) {
			t.Errorf("pool node %s of the killed daemon is still in Headscale (pool now %v)", id, now)
		}
	}
	firstPing(t, peer, pods[1].tailnetIPv4(t), 30*time.Second)
	t.Logf("after SIGKILL and a restart: old pool %v gone, new pool %v", old, now)

	// SIGKILL again, then a restart without a pool: no pool node is left.
	e.stopDaemon(true)
	e.extraEnv = append(e.extraEnv, "TS_CNI_POOL_SIZE=0")
	e.startDaemon()
	if left := e.poolNodes(t); len(left) > 0 {
		t.Errorf("after SIGKILL and a restart with pool size 0, Headscale still has pool nodes %v", left)
	}
	for id := range podNodes {
		if _, ok := devicesByID(t, e.cp)[id]; !ok {
			t.Errorf("pod node %s is gone after the restarts", id)
		}
	}

	for _, p := range pods {
		if err := e.del(ctx, p); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
	if devs := devicesByID(t, e.cp); len(devs) != 0 {
		var names []string
		for _, d := range devs {
			names = append(names, d.Name)
		}
		t.Errorf("nodes left after every DEL: %v", names)
	}
}

// TestPoolGracefulStop: a daemon stopped with SIGTERM deletes its pool's
// nodes from the control plane (the chart's uninstall stops it so).
func TestPoolGracefulStop(t *testing.T) {
	e := newEnv(t, "TS_CNI_POOL_SIZE=2")
	e.waitPoolReady(t, 2)
	if n := len(e.poolNodes(t)); n != 2 {
		t.Fatalf("pool nodes in Headscale: %d, want 2", n)
	}
	e.stopDaemon(false)
	if devs := devicesByID(t, e.cp); len(devs) != 0 {
		t.Errorf("nodes left after SIGTERM: %v", devs)
	}
	ents, _ := os.ReadDir(filepath.Join(e.dir, "state", "pool"))
	if len(ents) != 0 {
		t.Errorf("pool dirs left after SIGTERM: %d", len(ents))
	}
}
