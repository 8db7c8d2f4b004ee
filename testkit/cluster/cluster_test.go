package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/cluster"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// TestNodeRunsPod starts a node, runs the test app in a pod on the bridge
// network, fetches from it across the pod network, and checks that Stop
// left the host as it found it.
func TestNodeRunsPod(t *testing.T) {
	testkit.Root(t)
	imgs := cluster.ImageTarballs(t, "pause", "testapp")
	before := cluster.HostFingerprint()
	c := cluster.Start(t, cluster.Options{Images: imgs})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	start := time.Now()
	if _, err := c.Kubectl(ctx, "run", "web", "--image=tsymbiote/testapp:0.1.0", "--image-pull-policy=Never", "--port=8080"); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(ctx, "wait", "pod/web", "--for=condition=Ready", "--timeout=90s"); err != nil {
		desc, _ := c.Kubectl(ctx, "describe", "pod", "web")
		t.Fatalf("%v\n%s\n%s", err, out, desc)
	}
	t.Logf("pod ready in %.1fs", time.Since(start).Seconds())
	ip, err := c.Kubectl(ctx, "get", "pod", "web", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(fmt.Sprintf("http://%s:8080/healthz", ip))
	if err != nil {
		t.Fatalf("fetching from the pod at %s: %v", ip, err)
	}
	resp.Body.Close()
	t.Logf("pod %s answered %s", ip, resp.Status)
	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, s := range c.Steps() {
		t.Logf("%-16s %6.1fs", s.Name, s.Took.Seconds())
	}
	if diff := cluster.DiffFingerprint(before, cluster.HostFingerprint()); diff != "" {
		t.Errorf("host changed by the cluster:\n%s", diff)
	}
}
