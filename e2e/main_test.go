package e2e

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/cluster"
)

// Every test here shares one node: starting it is the slowest step, and
// only one node can run on a host. Each test works in namespaces of its
// own and removes what it installed.
var shared struct {
	once sync.Once
	c    *cluster.Cluster
	err  error
}

func TestMain(m *testing.M) {
	code := testkit.Main(m)
	if shared.c != nil {
		if err := shared.c.Stop(); err != nil {
			log.Printf("stopping the cluster: %v", err)
			code = 1
		}
		for _, s := range shared.c.Steps() {
			fmt.Printf("cluster step %-16s %6.1fs\n", s.Name, s.Took.Seconds())
		}
	}
	os.Exit(code)
}

// imageNames are the tarballs `make images` writes that the tests load.
var imageNames = []string{"pause", "testapp", "tailscale-cni", "operator", "adapter", "webui", "tailscale", "headscale", "proxy"}

// node returns the shared node, starting it on first use. Without root or
// the built tools and images it skips t, or fails it under CI=true.
func node(t *testing.T) *cluster.Cluster {
	t.Helper()
	testkit.Root(t)
	if missing := cluster.MissingPrerequisites(); missing != "" {
		testkit.Missing(t, "%s", missing)
	}
	imgs := cluster.ImageTarballs(t, imageNames...)
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cluster.LockWait+5*time.Minute)
		defer cancel()
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("tsymbiote-e2e-%d", os.Getpid()))
		shared.c, shared.err = cluster.StartIn(ctx, dir, cluster.Options{Images: imgs, Logf: log.Printf})
	})
	if shared.err != nil {
		t.Fatalf("starting the node: %v", shared.err)
	}
	return shared.c
}
