package adapter

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"tailscale.com/types/logger"
)

// socketCandidates are where tailscaled puts its socket in the usual images
// and distributions, relative to the process's root.
var socketCandidates = []string{
	"/var/run/tailscale/tailscaled.sock",
	"/run/tailscale/tailscaled.sock",
	"/tmp/tailscaled.sock",
	"/var/lib/tailscale/tailscaled.sock",
	"/tmp/tailscale/tailscaled.sock",
}

// DiscoverSocket finds a tailscaled socket through /proc, as a sidecar in a
// shared process namespace sees it: for every process named tailscaled (or
// containerboot, the Tailscale image's entry point), its --socket argument
// or one of the usual paths under /proc/<pid>/root. It retries every
// interval until one exists or ctx ends, and logs the one it picked.
func DiscoverSocket(ctx context.Context, logf logger.Logf, procRoot string, interval time.Duration) (string, error) {
	procRoot = procRootOr(procRoot)
	logged := false
	for {
		p, tried, err := discoverOnce(procRoot)
		if err == nil {
			logf("discover-socket: using %s", p)
			return p, nil
		}
		if !logged {
			logf("discover-socket: %v (tried %d paths); retrying every %v", err, tried, interval)
			logged = true
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("discover-socket: %w (last: %w)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

func discoverOnce(procRoot string) (path string, tried int, err error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return "", 0, fmt.Errorf("reading %s: %w", procRoot, err)
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	found := false
	for _, pid := range pids {
		dir := filepath.Join(procRoot, strconv.Itoa(pid))
		args := readCmdline(filepath.Join(dir, "cmdline"))
		comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
		if !isTailscaled(strings.TrimSpace(string(comm)), args) {
			continue
		}
		found = true
		paths := append(socketArgs(args), socketCandidates...)
		for _, p := range paths {
			full := filepath.Join(dir, "root", p)
			tried++
			if fi, err := os.Stat(full); err == nil && fi.Mode()&os.ModeSocket != 0 {
				return full, tried, nil
			}
		}
	}
	if !found {
		return "", tried, fmt.Errorf("no tailscaled process under %s", procRoot)
	}
	return "", tried, fmt.Errorf("tailscaled found under %s but none of its sockets exist yet", procRoot)
}

// isTailscaled matches tailscaled by its command name (comm, cut to 15
// bytes by the kernel) or its argv[0], allowing versioned file names such
// as tailscaled-v1.102.5, and the Tailscale image's containerboot.
func isTailscaled(comm string, args []string) bool {
	if strings.HasPrefix(comm, "tailscaled") || comm == "containerboot" {
		return true
	}
	return len(args) > 0 && strings.HasPrefix(filepath.Base(args[0]), "tailscaled")
}

func readCmdline(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return nil
	}
	var out []string
	for _, a := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}) {
		out = append(out, string(a))
	}
	return out
}

// socketArgs extracts tailscaled's --socket (or -socket) value from its
// command line. containerboot's own settings are not parsed: it starts
// tailscaled with an explicit --socket, which the tailscaled process shows.
func socketArgs(args []string) []string {
	var out []string
	for i, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		a = strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, "socket="); ok && v != "" {
			out = append(out, v)
		} else if a == "socket" && i+1 < len(args) {
			out = append(out, args[i+1])
		}
	}
	return out
}

// procRootOr is procRoot, or /proc when empty.
func procRootOr(procRoot string) string {
	if procRoot == "" {
		return "/proc"
	}
	return procRoot
}
