package e2e

import (
	"bytes"
	"os"
	"path/filepath"

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
