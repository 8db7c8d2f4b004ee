package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// A demo killed with SIGKILL cannot clean up after itself. Its children die
// with it (Pdeathsig), and the TUNs of its pods with the daemon, but its
// temporary directory, its pods' network namespaces (and the veths in them)
// and the forwarding sysctls it turned on stay. The next demo removes what a
// dead demo left; the links and rules of the dead daemon's pods are swept by
// the new tailscale-cni daemon itself when it starts.

const (
	pidFileName     = "demo.pid"
	sysctlsFileName = "sysctls.json"
	demoDirPrefix   = "tsymbiote-demo-"
)

// podNetns names pod i's network namespace after the demo's PID, so that
// the next demo can tell a dead demo's namespaces (demoNetns) from a live
// one's.
func podNetns(pid, i int) string { return fmt.Sprintf("tsymbiote-demo-%d-pod-%d", pid, i) }

// demoNetns matches podNetns's names; the number is the demo's PID.
var demoNetns = regexp.MustCompile(`^tsymbiote-demo-([0-9]+)-pod-[0-9]+$`)

// processAlive reports whether pid names a running process. A PID reused
// by another process reads as alive, which only leaves leftovers in place.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// writePIDFile marks dir as the running demo's.
func writePIDFile(dir string) error {
	return os.WriteFile(filepath.Join(dir, pidFileName), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// saveSysctls records the values the demo will restore, where the next
// demo finds them if this one is killed.
func saveSysctls(dir string, values map[string][]byte) error {
	b, err := json.Marshal(values)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, sysctlsFileName), b, 0o644)
}

// sweepStale removes what demos that died without cleaning up left behind:
// directories in tmp whose PID file names a dead process (restoring the
// sysctls recorded there first) and, as root, pod namespaces named after a
// dead demo.
func sweepStale(logf func(string, ...any), tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, demoDirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, pidFileName))
		if err != nil {
			continue // not a demo's, or one still starting
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		if os.Geteuid() == 0 {
			restoreSysctls(logf, filepath.Join(dir, "cni", sysctlsFileName))
		}
		if err := os.RemoveAll(dir); err != nil {
			logf("demo: removing %s, left by a demo that was killed: %v", dir, err)
			continue
		}
		logf("demo: removed %s, left by demo process %d that was killed", dir, pid)
	}
	if os.Geteuid() != 0 {
		return
	}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		m := demoNetns.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); processAlive(pid) {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			logf("demo: removing netns %s, left by a demo that was killed: %v: %s", e.Name(), err, out)
			continue
		}
		logf("demo: removed netns %s, left by a demo that was killed", e.Name())
	}
}

func restoreSysctls(logf func(string, ...any), file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		return
	}
	var values map[string][]byte
	if err := json.Unmarshal(b, &values); err != nil {
		logf("demo: %s: %v", file, err)
		return
	}
	for p, v := range values {
		// Only the sysctls the demo records, whatever the file says.
		if p != ipv4Forward && p != ipv6Forward {
			continue
		}
		if err := os.WriteFile(p, v, 0o644); err != nil {
			logf("demo: restoring %s: %v", p, err)
		}
	}
}

// otherCNIDaemon returns the PID of a tailscale-cni-daemon this demo did
// not start, or 0. The demo's daemon sweeps links and rules that no pod of
// its own owns, so it must not run beside another (a real node's, say).
func otherCNIDaemon() (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("listing processes: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		argv0, _, _ := strings.Cut(string(b), "\x00")
		if filepath.Base(argv0) == "tailscale-cni-daemon" {
			return pid, nil
		}
	}
	return 0, nil
}
