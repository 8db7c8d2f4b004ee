package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestNodeImages checks that the node runs and holds every image the
// charts name, under the names the charts' defaults use.
func TestNodeImages(t *testing.T) {
	c := node(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.Ctr(ctx, "images", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tsymbiote/tailscale-cni:", "tsymbiote/operator:", "tsymbiote/adapter:", "tsymbiote/webui:", "registry.k8s.io/pause:3.10"} {
		if !strings.Contains(out, want) {
			t.Errorf("node lacks image %s; it has:\n%s", want, out)
		}
	}
}
