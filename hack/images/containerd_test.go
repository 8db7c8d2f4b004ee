package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
)

// TestContainerdImport imports a built tarball into a containerd of its own
// (root, state and socket in a temporary directory) the way the README says
// to, unpacking it, and wants the chart's name in the image list.
func TestContainerdImport(t *testing.T) {
	testkit.Root(t)
	for _, bin := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			testkit.Missing(t, "%s not installed (apt-get install containerd)", bin)
		}
	}
	b := buildImages(t, "pause")[0]
	ctr := startContainerd(t)
	if out, err := ctr("images", "import", "--snapshotter", "native", b.File); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	out, err := ctr("images", "ls", "-q")
	if err != nil {
		t.Fatalf("ctr images ls: %v\n%s", err, out)
	}
	if !strings.Contains(out, "registry.k8s.io/pause:3.10\n") {
		t.Errorf("imported images %q lack registry.k8s.io/pause:3.10", out)
	}
}

// startContainerd runs containerd with everything under a temporary
// directory and without the CRI plugin, stops it when the test ends, and
// returns a function that runs ctr against it in the k8s.io namespace.
func startContainerd(t *testing.T) func(args ...string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(conf, []byte("version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	proc := testkit.Start(t, exec.Command("containerd", "--config", conf, "--root", filepath.Join(dir, "root"),
		"--state", filepath.Join(dir, "state"), "--address", sock))
	ctr := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
		return string(out), err
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := ctr("version"); err == nil {
			return ctr
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s in 30s:\n%s", sock, proc.Output())
		}
	}
}
