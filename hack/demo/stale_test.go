package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/testkit"
)

// TestDemoAfterKill kills a demo with SIGKILL, which it cannot clean up
// after, and checks that the next demo removes what it left (its pods'
// namespaces, its directory, its daemon's links and rules, the sysctls it
// changed) and, stopped with Ctrl-C, leaves the host as it found it.
func TestDemoAfterKill(t *testing.T) {
	// The demo's leftovers worth sweeping are its pods' network namespaces.
	testkit.Root(t)
	bin := buildDemoBinaries(t)
	before := hostState(t)
	tmpBefore := demoDirs(t)

	first := startDemo(t, bin, 1, 1)
	if err := first.waitReady(4 * time.Minute); err != nil {
		t.Fatal(err)
	}
	pid := first.proc.PID()
	first.kill()
	netns := podNetns(pid, 1)
	if _, err := os.Stat(filepath.Join("/var/run/netns", netns)); err != nil {
		t.Fatalf("the killed demo left no netns %s to sweep (%v): this test tests nothing", netns, err)
	}
	left := demoDirs(t)
	if left == tmpBefore {
		t.Fatal("the killed demo left no directory to sweep: this test tests nothing")
	}
	t.Logf("killed demo %d left netns %s and %s", pid, netns, strings.TrimPrefix(left, tmpBefore))
	// Its children die with it (Pdeathsig), but not at the same instant:
	// a second demo refuses to run its CNI daemon beside another one.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		other, err := otherCNIDaemon()
		if err != nil {
			t.Fatal(err)
		}
		if other == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed demo's tailscale-cni-daemon (pid %d) is still running", other)
		}
	}

	second := startDemo(t, bin, 1, 1)
	if err := second.waitReady(4 * time.Minute); err != nil {
		t.Fatal(err)
	}
	second.stop()
	// Read only now: the buffer is written to until the process exits.
	out := second.proc.Output()
	for _, want := range []string{"removed netns " + netns, fmt.Sprintf("left by demo process %d", pid)} {
		if !strings.Contains(out, want) {
			t.Errorf("the second demo did not say %q", want)
		}
	}
	if after := hostState(t); after != before {
		t.Errorf("host network changed:\nbefore: %s\nafter:  %s", before, after)
	}
	if after := demoDirs(t); after != tmpBefore {
		t.Errorf("directories left behind: before %q, after %q", tmpBefore, after)
	}
}
