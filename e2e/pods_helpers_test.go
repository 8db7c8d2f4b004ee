package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit/cluster"
)

// podsTagOwned is the tag the pods test gives a pod by annotation; the
// test adds it to the policy's tagOwners for its run.
const podsTagOwned = "tag:web"

// ownTag adds tag to the Headscale policy's tagOwners (owned by the
// harness's user) until t ends.
func ownTag(t *testing.T, c *cluster.Cluster, tag string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp, err := controlPlaneOf(c, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	pe, err := controlplane.AsPolicyEditor(cp)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := pe.GetPolicy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Replace(orig.Body, `"tagOwners": {`, `"tagOwners": {`+"\n    \""+tag+`": ["tsymbiote@"],`, 1)
	if body == orig.Body {
		t.Fatalf("policy has no tagOwners:\n%s", orig.Body)
	}
	now, err := pe.SetPolicy(ctx, body, orig.Version)
	if err != nil {
		t.Fatalf("adding %s to tagOwners: %v", tag, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pe.SetPolicy(ctx, orig.Body, now.Version); err != nil {
			t.Errorf("restoring the policy: %v", err)
		}
	})
}

// podGetent runs `getent ahostsv4 name` inside the pod's network namespace
// (netns under /run/netns) with the resolv.conf kubelet writes for a
// ClusterFirst pod in namespace ns, through glibc, and returns the first
// address ("" when not found) and how long it took.
func podGetent(t *testing.T, netns, ns, name string) (string, time.Duration) {
	t.Helper()
	dir := filepath.Join("/etc/netns", netns)
	if _, err := os.Stat(filepath.Join(dir, "resolv.conf")); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			os.RemoveAll(dir)
			os.Remove("/etc/netns") // only when empty
		})
		conf := fmt.Sprintf("search %s.svc.%s svc.%s %s\nnameserver %s\noptions ndots:5\n",
			ns, cluster.ClusterDomain, cluster.ClusterDomain, cluster.ClusterDomain, cluster.ClusterDNSIP)
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	out, err := exec.Command("ip", "netns", "exec", netns, "getent", "ahostsv4", name).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 2 {
			return "", took
		}
		t.Fatalf("getent ahostsv4 %s in %s: %v\n%s", name, netns, err, out)
	}
	if f := strings.Fields(string(out)); len(f) > 0 {
		return f[0], took
	}
	return "", took
}

// sumOver GETs url with client and returns the body's length and sha256.
func sumOver(ctx context.Context, client *http.Client, url string) (int64, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// dialerClient is an HTTP client whose connections go through dial.
func dialerClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}
