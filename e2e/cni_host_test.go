package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"tsymbiote.dhouti.dev/testkit/cluster"
)

// restoreHost puts the node's CNI files back as they were before the
// install and removes the chart's host directories if the test made them.
// It returns what it had to fix.
func (ct *cniTest) restoreHost() []string {
	t := ct.t
	var fixed []string
	if now, _ := os.ReadFile(cluster.ConflistPath()); !bytes.Equal(now, ct.conflist) {
		if err := os.WriteFile(cluster.ConflistPath(), ct.conflist, 0o644); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		fixed = append(fixed, "conflist")
	}
	remove, _ := filepath.Glob(filepath.Join(filepath.Dir(cluster.ConflistPath()), ".*tailscale-cni*"))
	if !ct.shimBefore {
		remove = append(remove, cniShim)
	}
	for _, p := range remove {
		if exists(p) {
			fixed = append(fixed, p)
		}
	}
	// The chart's hostPath directories outlive the release by design.
	if !ct.stateBefore {
		remove = append(remove, stateDir)
	}
	if !ct.runBefore {
		remove = append(remove, runDir)
	}
	for _, p := range remove {
		if err := os.RemoveAll(p); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	return fixed
}

// shareNetnsDir makes the mount that holds /var/run/netns shared, unless
// it is shared (or a slave) already, and unshareNetnsDir makes it private
// again. The daemon mounts /var/run/netns with HostToContainer propagation,
// which containerd refuses unless the mount it finds for that path (by
// name, without following the /var/run symlink) propagates. On real nodes
// systemd makes / shared; the harness's host has a private / and no
// systemd, and testkit/cluster does not share it.
func (ct *cniTest) shareNetnsDir() {
	t := ct.t
	mp, prop := mountOf(netnsPath)
	if prop == "shared" || prop == "slave" {
		return
	}
	if err := syscall.Mount("", mp, "", syscall.MS_SHARED, ""); err != nil {
		t.Fatalf("making %s shared: %v", mp, err)
	}
	ct.netnsUndo = func() error { return syscall.Mount("", mp, "", syscall.MS_PRIVATE, "") }
	t.Logf("made the mount %s (which holds %s) shared for the daemon's HostToContainer mount, as systemd does on real nodes", mp, netnsPath)
}

func (ct *cniTest) unshareNetnsDir() {
	if ct.netnsUndo == nil {
		return
	}
	if err := ct.netnsUndo(); err != nil {
		ct.t.Errorf("cleanup: making the mount of %s private again: %v", netnsPath, err)
	}
}

// netnsPath is the chart's node.netnsDir.
const netnsPath = "/var/run/netns"

// mountOf returns the mount point containing path, taken by name as
// containerd does, and its propagation: "shared", "slave" or "private".
func mountOf(path string) (mountPoint, propagation string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "/", ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		mp := f[4]
		if mp != "/" && path != mp && !strings.HasPrefix(path, mp+"/") {
			continue
		}
		// The longest match wins; of equal ones, the last (on top).
		if len(mp) < len(mountPoint) {
			continue
		}
		mountPoint, propagation = mp, "private"
		// Optional fields run from the seventh to the "-" separator.
		for _, o := range f[6:] {
			if o == "-" {
				break
			}
			switch {
			case strings.HasPrefix(o, "shared:"):
				propagation = "shared"
			case strings.HasPrefix(o, "master:") && propagation != "shared":
				propagation = "slave"
			}
		}
	}
	return mountPoint, propagation
}
