package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

// hostSysctls are the host settings a node changes: forwarding (the
// harness, for pod traffic; tailscale-cni, for IPv6), and what kubelet
// sets at start (it enforces its defaults unless protectKernelDefaults).
// Teardown writes back what they were.
var hostSysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv6/conf/all/forwarding",
	"net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// hostDirs are the node paths a cluster writes outside its own directory:
// the CNI directories containerd reads (and the charts write), libcni's
// cache, the log links kubelet makes whatever its root, containerd's shim
// sockets, and what the tailscale-cni chart's defaults create. Those that
// did not exist before are removed; in those that did, only new entries.
var hostDirs = []string{
	"/opt/cni/bin", "/opt/cni",
	"/etc/cni/net.d", "/etc/cni",
	"/var/lib/cni",
	"/var/log/containers", "/var/log/pods",
	"/run/containerd",
	"/var/run/tailscale-cni", "/var/lib/tailscale-cni",
}

// hostState is what the host looked like before the cluster started, so
// that teardown can put back exactly that, and nothing more: other tests'
// links, rules and directories are not the cluster's to remove.
type hostState struct {
	sysctls  map[string]string
	iptables map[string][]string // "iptables" or "ip6tables" -> save output lines
	dirs     map[string][]string // existing dir -> its entries; absent dirs are missing
	netns    map[string]bool
	cgroups  map[string]bool
	mounts   map[string]bool
	rules    map[string]bool // "-4 <ip rule line>", "-6 ..."
	routes   map[string]bool // "-4 <route line>" in tables other than main and local
	// sharedMount is the mount the node made shared (see shareNetnsMount),
	// to be made private again; "" when it was shared already.
	sharedMount string
}

// statePath is where a running node keeps the host's state from before it
// started: when a node dies without Stop (a test binary killed at its
// timeout), the next start finds it and restores the host first.
const statePath = "/run/tsymbiote-cluster.state"

// abandoned is what the state file records besides the host's state: what
// restore needs to find the dead node's leftovers.
type abandoned struct {
	Dir              string
	ContainerdSocket string
	Host             savedState
}

// savedState is hostState in JSON.
type savedState struct {
	Sysctls                               map[string]string
	Iptables                              map[string][]string
	Dirs                                  map[string][]string
	Netns, Cgroups, Mounts, Rules, Routes map[string]bool
	SharedMount                           string
}

func (h *hostState) save(a abandoned) error {
	a.Host = savedState{h.sysctls, h.iptables, h.dirs, h.netns, h.cgroups, h.mounts, h.rules, h.routes, h.sharedMount}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return os.WriteFile(statePath, b, 0o600)
}

// recoverAbandoned restores the host from the state file of a node that
// died without Stop, if there is one. The caller holds the host lock, so
// that node is gone.
func recoverAbandoned(logf func(string, ...any)) error {
	b, err := os.ReadFile(statePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var a abandoned
	if err := json.Unmarshal(b, &a); err != nil {
		return fmt.Errorf("reading %s: %w (remove it once the host is clean)", statePath, err)
	}
	logf("cluster: a node in %s was not stopped; restoring the host from %s", a.Dir, statePath)
	s := a.Host
	h := &hostState{s.Sysctls, s.Iptables, s.Dirs, s.Netns, s.Cgroups, s.Mounts, s.Rules, s.Routes, s.SharedMount}
	if err := h.restore(a.Dir, a.ContainerdSocket, ownLinks); err != nil {
		return fmt.Errorf("restoring the host after an abandoned node: %w", err)
	}
	if err := os.RemoveAll(a.Dir); err != nil {
		return err
	}
	return os.Remove(statePath)
}

func snapshotHost() (*hostState, error) {
	h := &hostState{sysctls: map[string]string{}, iptables: map[string][]string{}, dirs: map[string][]string{}}
	for _, k := range hostSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			h.sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		lines, err := iptablesSave(tool)
		if err != nil {
			return nil, err
		}
		h.iptables[tool] = lines
	}
	for _, d := range hostDirs {
		if entries, err := os.ReadDir(d); err == nil {
			names := make([]string, 0, len(entries))
			for _, e := range entries {
				names = append(names, e.Name())
			}
			h.dirs[d] = names
		}
	}
	h.netns = setOf(netnsNames())
	h.cgroups = setOf(cgroupDirs())
	h.mounts = setOf(mountPoints())
	h.rules = setOf(ipLines("rule", "show"))
	h.routes = setOf(ipLines("route", "show", "table", "all"))
	return h, nil
}

// conflictsWithHost says why a node cannot start here: another node's CNI
// configuration, which containerd would pick over ours.
func (h *hostState) conflict() error {
	if names := h.dirs["/etc/cni/net.d"]; len(names) > 0 {
		return fmt.Errorf("/etc/cni/net.d already holds %v: is another Kubernetes node running on this host?", names)
	}
	return nil
}

// restore undoes what the node did to the host, in an order that lets each
// step succeed: processes first (they hold mounts and cgroups), then
// mounts, network namespaces, cgroups, links, packet filter rules,
// directories and sysctls. It goes on past errors and returns them all.
func (h *hostState) restore(ownDir, containerdSock string, links []string) error {
	var errs []error
	errs = append(errs, killStragglers(ownDir, containerdSock, h.cgroups))
	errs = append(errs, h.unmountNew(ownDir))
	errs = append(errs, h.removeNetns())
	errs = append(errs, h.removeCgroups())
	for _, l := range links {
		errs = append(errs, deleteLinks(l))
	}
	errs = append(errs, h.removeRulesAndRoutes())
	for _, tool := range []string{"iptables", "ip6tables"} {
		errs = append(errs, undoIptables(tool, h.iptables[tool]))
	}
	errs = append(errs, h.removeDirs())
	if h.sharedMount != "" {
		if err := syscall.Mount("", h.sharedMount, "", syscall.MS_PRIVATE, ""); err != nil {
			errs = append(errs, fmt.Errorf("making %s private again: %w", h.sharedMount, err))
		}
	}
	for k, v := range h.sysctls {
		errs = append(errs, writeSysctl(k, v))
	}
	return errors.Join(errs...)
}

func setOf(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func writeSysctl(key, value string) error {
	path := "/proc/sys/" + key
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == value {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// killStragglers kills what outlives containerd: its shims (each in its
// own session, holding a pod's containers), any process left in a cgroup
// the node made, and, after a node that died without Stop, any of its
// components still running (their arguments name the node's directory).
func killStragglers(ownDir, containerdSock string, cgroupsBefore map[string]bool) error {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		shim := strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") && slices.Contains(args, containerdSock)
		if shim || strings.Contains(string(b), ownDir+"/") {
			killPID(filepath.Base(filepath.Dir(p)))
		}
	}
	for _, d := range cgroupDirs() {
		if cgroupsBefore[d] {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for pid := range strings.FieldsSeq(string(b)) {
			killPID(pid)
		}
	}
	return nil
}

func killPID(pid string) {
	var n int
	if _, err := fmt.Sscan(pid, &n); err == nil && n > 1 && n != os.Getpid() {
		_ = syscall.Kill(n, syscall.SIGKILL)
	}
}

// mountPoints lists every mount point of this mount namespace.
func mountPoints() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 {
			out = append(out, strings.ReplaceAll(fields[4], `\040`, " "))
		}
	}
	return out
}

// unmountNew unmounts what the node mounted: everything under its own
// directory (volumes, container root filesystems) and containerd's state,
// deepest first. Mounts elsewhere are other tests' business.
func (h *hostState) unmountNew(ownDir string) error {
	var errs []error
	for range 3 { // a detached parent can reveal a child mounted twice
		var todo []string
		for _, m := range mountPoints() {
			if h.mounts[m] {
				continue
			}
			if strings.HasPrefix(m, ownDir+"/") || strings.HasPrefix(m, "/run/containerd/") || strings.HasPrefix(m, "/run/netns/cni-") {
				todo = append(todo, m)
			}
		}
		if len(todo) == 0 {
			return nil
		}
		sort.Slice(todo, func(i, j int) bool { return len(todo[i]) > len(todo[j]) })
		for _, m := range todo {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", m, err))
			}
		}
	}
	return errors.Join(errs...)
}

func netnsNames() []string {
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// removeNetns removes the pod network namespaces containerd made (named
// cni-<uuid>) that a stopped sandbox left behind.
func (h *hostState) removeNetns() error {
	var errs []error
	for _, n := range netnsNames() {
		if h.netns[n] || !strings.HasPrefix(n, "cni-") {
			continue
		}
		p := "/run/netns/" + n
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cgroupDirs lists every cgroup directory of every v1 hierarchy and of the
// unified one.
func cgroupDirs() []string {
	var out []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, r := range roots {
		_ = filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() && p != r {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

func (h *hostState) removeCgroups() error {
	var todo []string
	for _, d := range cgroupDirs() {
		if !h.cgroups[d] {
			todo = append(todo, d)
		}
	}
	// Children before parents; a cgroup empties a moment after its last
	// process is killed, so try a few times.
	sort.Slice(todo, func(i, j int) bool { return len(todo[i]) > len(todo[j]) })
	var errs []error
	for _, d := range todo {
		var err error
		for range 50 {
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// deleteLinks deletes a link, or with a trailing "*" every link whose name
// starts with the rest. Deleting one end of a veth deletes both.
func deleteLinks(pattern string) error {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("ip link show: %w", err)
	}
	var errs []error
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.SplitN(line, ": ", 3)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		if name == pattern || (strings.HasSuffix(pattern, "*") && strings.HasPrefix(name, strings.TrimSuffix(pattern, "*"))) {
			if out, err := exec.Command("ip", "link", "del", name).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("Cannot find")) {
				errs = append(errs, fmt.Errorf("ip link del %s: %w: %s", name, err, out))
			}
		}
	}
	return errors.Join(errs...)
}

var builtinChains = map[string]bool{"PREROUTING": true, "INPUT": true, "FORWARD": true, "OUTPUT": true, "POSTROUTING": true}

// ipLines lists `ip -4 ...` and `ip -6 ...` output lines, each prefixed
// with its family. Routes of the main and local tables are left out: they
// belong to links and go with them.
func ipLines(args ...string) []string {
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		b, err := exec.Command("ip", append([]string{fam}, args...)...).Output()
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
			if line == "" || (args[0] == "route" && (!strings.Contains(line, " table ") || strings.Contains(line, " table local") || strings.Contains(line, " table main"))) {
				continue
			}
			out = append(out, fam+" "+line)
		}
	}
	return out
}

// removeRulesAndRoutes deletes the policy rules and the routes in other
// tables that are new: a CNI daemon that died without its pods' DELs
// leaves both (rules name links that are gone; unreachable routes have no
// link to go with).
func (h *hostState) removeRulesAndRoutes() error {
	var errs []error
	for _, l := range ipLines("rule", "show") {
		if h.rules[l] {
			continue
		}
		fam, rest, _ := strings.Cut(l, " ")
		pref, sel, _ := strings.Cut(rest, ":")
		args := []string{fam, "rule", "del", "pref", pref}
		for _, f := range strings.Fields(sel) {
			if !strings.HasPrefix(f, "[") { // [detached]: the link is gone
				args = append(args, f)
			}
		}
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out))
		}
	}
	for _, l := range ipLines("route", "show", "table", "all") {
		if h.routes[l] {
			continue
		}
		fam, rest, _ := strings.Cut(l, " ")
		args := append([]string{fam, "route", "del"}, strings.Fields(rest)...)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("No such process")) {
			errs = append(errs, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out))
		}
	}
	return errors.Join(errs...)
}

// iptablesSave returns the rule and chain lines of every table, each
// prefixed with its table ("nat -A KUBE-SERVICES ..."), without counters.
func iptablesSave(tool string) ([]string, error) {
	out, err := exec.Command(tool + "-save").Output()
	if err != nil {
		return nil, fmt.Errorf("%s-save: %w", tool, err)
	}
	var lines []string
	table := ""
	for line := range strings.SplitSeq(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			// Built-in chains come with their table, which iptables-nft
			// creates on first use and cannot delete; empty, they change
			// nothing, and their rules are listed below.
			name, _, _ := strings.Cut(line[1:], " ")
			if !builtinChains[name] {
				lines = append(lines, table+" :"+name)
			}
		case strings.HasPrefix(line, "-A "):
			lines = append(lines, table+" "+line)
		}
	}
	return lines, nil
}

// undoIptables deletes the rules and then the chains added since before
// was saved (kube-proxy's, kubelet's canaries, the bridge plugin's).
func undoIptables(tool string, before []string) error {
	now, err := iptablesSave(tool)
	if err != nil {
		return err
	}
	had := setOf(before)
	var errs []error
	var chains [][2]string
	for _, l := range now {
		if had[l] {
			continue
		}
		table, rest, _ := strings.Cut(l, " ")
		if strings.HasPrefix(rest, ":") {
			chains = append(chains, [2]string{table, rest[1:]})
			continue
		}
		args := append([]string{"-w", "-t", table, "-D"}, splitRule(strings.TrimPrefix(rest, "-A "))...)
		if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, out))
		}
	}
	for _, c := range chains {
		_ = exec.Command(tool, "-w", "-t", c[0], "-F", c[1]).Run()
	}
	for _, c := range chains {
		if out, err := exec.Command(tool, "-w", "-t", c[0], "-X", c[1]).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s -t %s -X %s: %w: %s", tool, c[0], c[1], err, out))
		}
	}
	return errors.Join(errs...)
}

// splitRule splits an iptables-save rule into arguments, keeping double
// quoted words (comments) whole.
func splitRule(s string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && inQuote && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQuote, have = !inQuote, true
		case c == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}

// removeDirs removes the host directories that were not there before, and
// in those that were, only the entries that are new.
func (h *hostState) removeDirs() error {
	var errs []error
	for _, d := range hostDirs {
		names, existed := h.dirs[d]
		if !existed {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if !slices.Contains(names, e.Name()) {
				if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// HostFingerprint describes the host state a cluster may change, for tests
// that check that Stop restored it: links, network namespaces, rules,
// mounts, cgroups, packet filter rules, sysctls and host directories.
func HostFingerprint() map[string][]string {
	h, err := snapshotHost()
	if err != nil {
		return map[string][]string{"error": {err.Error()}}
	}
	fp := map[string][]string{
		"netns":   keys(h.netns),
		"mounts":  keys(h.mounts),
		"cgroups": keys(h.cgroups),
	}
	for tool, lines := range h.iptables {
		fp[tool] = lines
	}
	for k, v := range h.sysctls {
		fp["sysctl"] = append(fp["sysctl"], k+"="+v)
	}
	for _, d := range hostDirs {
		if names, ok := h.dirs[d]; ok {
			fp["dirs"] = append(fp["dirs"], d+": "+strings.Join(names, " "))
		}
	}
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	for line := range strings.SplitSeq(string(out), "\n") {
		if f := strings.SplitN(line, ": ", 3); len(f) > 1 {
			fp["links"] = append(fp["links"], f[1])
		}
	}
	mp, prop := mountOf(netnsDir)
	fp["mounts"] = append(fp["mounts"], "propagation of "+mp+": "+prop)
	fp["rules"] = keys(h.rules)
	fp["routes"] = keys(h.routes)
	return fp
}

// DiffFingerprint names what differs between two fingerprints, or "".
func DiffFingerprint(before, after map[string][]string) string {
	var b strings.Builder
	for _, k := range []string{"links", "netns", "rules", "routes", "mounts", "cgroups", "iptables", "ip6tables", "sysctl", "dirs", "error"} {
		was, now := setOf(before[k]), setOf(after[k])
		for x := range now {
			if !was[x] {
				fmt.Fprintf(&b, "%s: added %s\n", k, x)
			}
		}
		for x := range was {
			if !now[x] {
				fmt.Fprintf(&b, "%s: removed %s\n", k, x)
			}
		}
	}
	return b.String()
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// netnsDir is where containerd makes pods' network namespaces, and what the
// tailscale-cni chart mounts into its daemon with HostToContainer
// propagation.
const netnsDir = "/var/run/netns"

// shareNetnsMount makes the mount that holds /var/run/netns shared unless it
// propagates already, and records it for restore. containerd refuses a
// HostToContainer mount from a private one, and it finds the mount by the
// path's name, without following the /var/run symlink. Nodes with systemd
// have a shared /; hosts without it (this kind) have a private one. Only
// that one mount changes, not the ones beneath it.
func (h *hostState) shareNetnsMount() error {
	mp, prop := mountOf(netnsDir)
	if prop == "shared" || prop == "slave" {
		return nil
	}
	if err := syscall.Mount("", mp, "", syscall.MS_SHARED, ""); err != nil {
		return fmt.Errorf("making %s (which holds %s) shared: %w", mp, netnsDir, err)
	}
	h.sharedMount = mp
	return nil
}

// mountOf returns the mount point containing path, taken by name, and its
// propagation: "shared", "slave" or "private".
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
