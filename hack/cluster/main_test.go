package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/cluster"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// TestCommand runs tsymbiote-cluster as a person does, uses the kubeconfig
// it prints, stops it with Ctrl-C (SIGINT) and wants the host as before.
func TestCommand(t *testing.T) {
	testkit.Root(t)
	if missing := cluster.MissingPrerequisites(); missing != "" {
		testkit.Missing(t, "%s", missing)
	}
	// Only the two images a pod needs, to keep the test short.
	onlyTwo := t.TempDir()
	for _, img := range cluster.ImageTarballs(t, "pause", "testapp") {
		if err := os.Symlink(img, filepath.Join(onlyTwo, filepath.Base(img))); err != nil {
			t.Fatal(err)
		}
	}
	bin := testkit.BuildOnce(t, "tsymbiote.dhouti.dev/hack/cluster")
	ctx, cancel := context.WithTimeout(context.Background(), cluster.LockWait+5*time.Minute)
	defer cancel()
	if err := cluster.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	before := cluster.HostFingerprint()

	abandonCluster(ctx, t, bin, onlyTwo)

	// The next run finds the abandoned node's state, restores the host,
	// and starts.
	p := testkit.Start(t, exec.Command(bin, "--images", onlyTwo))
	if err := p.WaitFor(ctx, "Ctrl-C stops the cluster"); err != nil {
		t.Fatalf("no guide printed: %v\n%s", err, p.Output())
	}
	kubeconfig := regexp.MustCompile(`export KUBECONFIG=(\S+)`).FindStringSubmatch(p.Output())
	if kubeconfig == nil {
		t.Fatalf("guide names no kubeconfig:\n%s", p.Output())
	}
	if strings.Contains(p.Output(), "headscaleAPIKey:") {
		t.Errorf("the guide printed the Headscale API key")
	}
	kubectl, err := testkit.FindBinary("kubectl")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig[1], "get", "nodes", "--no-headers").CombinedOutput()
	if err != nil || !strings.Contains(string(out), " Ready ") {
		t.Fatalf("kubectl get nodes with the printed kubeconfig: %v\n%s", err, out)
	}
	t.Logf("kubectl get nodes: %s", strings.TrimSpace(string(out)))

	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(2 * time.Minute):
		t.Fatalf("still running 2 minutes after Ctrl-C:\n%s", p.Output())
	}
	if err := p.Err(); err != nil {
		t.Fatalf("exit after Ctrl-C: %v\n%s", err, p.Output())
	}
	if !strings.Contains(p.Output(), "was not stopped; restoring the host") {
		t.Errorf("second run did not say it restored the abandoned node's host:\n%s", p.Output())
	}
	if diff := cluster.DiffFingerprint(before, cluster.HostFingerprint()); diff != "" {
		t.Errorf("host changed by make cluster:\n%s", diff)
	}
}

// abandonCluster starts the command, runs a pod (so that containerd's
// shims, a network namespace, mounts and cgroups exist), and kills the
// command with SIGKILL: nothing of it gets to clean up.
func abandonCluster(ctx context.Context, t *testing.T, bin, images string) {
	t.Helper()
	p := testkit.Start(t, exec.Command(bin, "--images", images))
	if err := p.WaitFor(ctx, "Ctrl-C stops the cluster"); err != nil {
		t.Fatalf("first run: %v\n%s", err, p.Output())
	}
	kubeconfig := regexp.MustCompile(`export KUBECONFIG=(\S+)`).FindStringSubmatch(p.Output())[1]
	kubectl, _ := testkit.FindBinary("kubectl")
	for _, args := range [][]string{
		{"run", "web", "--image=tsymbiote/testapp:0.1.0", "--image-pull-policy=Never"},
		{"wait", "pod/web", "--for=condition=Ready", "--timeout=90s"},
	} {
		if out, err := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
	}
	p.Kill()
	<-p.Done()
	t.Logf("killed the first run with a pod running")
}
