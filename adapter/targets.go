package adapter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"tailscale.com/client/local"
	"tailscale.com/types/logger"
)

// Target is one tailscaled daemon the adapter answers for.
type Target struct {
	Name   string // what requests use to select it
	Socket string // path of its LocalAPI socket
	// PodDir: the socket is <dir>/<name>/tailscaled.sock, tailscale-cni's
	// per-pod layout, so the daemon behind it is a pod's node inside the
	// CNI daemon (see ReportedNetcheck).
	PodDir bool
}

// Targets resolves request target names to daemons. It is built from the
// --socket values: a socket path names one target (named by its path); a
// directory names every *.sock file in it (named by file name without
// ".sock") and every subdirectory holding a tailscaled.sock (named by the
// subdirectory, as tailscale-cni's <runDir>/pods/<namespace>_<pod>), re-read
// on every call since pods come and go.
type Targets struct {
	// rediscover, when set, finds the socket again once the one in paths
	// is gone (--discover-socket: a restarted tailscaled container has a
	// new PID, so its /proc/<pid>/root path changes).
	rediscover func() (string, error)
	logf       logger.Logf

	mu      sync.Mutex
	paths   []string
	clients map[string]*local.Client // by socket path
}

// NewTargets returns Targets for the given --socket values.
func NewTargets(paths []string) (*Targets, error) {
	if len(paths) == 0 {
		return nil, errors.New("no --socket given")
	}
	var clean []string
	for _, p := range paths {
		if strings.TrimSpace(p) == "" {
			return nil, errors.New("--socket: empty path")
		}
		p = filepath.Clean(p)
		if !slices.Contains(clean, p) {
			clean = append(clean, p)
		}
	}
	return &Targets{paths: clean, clients: map[string]*local.Client{}}, nil
}

// NewDiscoveredTargets returns Targets for one socket found by
// --discover-socket at path; rediscover finds it again when the path is
// gone, and logf says when it does.
func NewDiscoveredTargets(logf logger.Logf, path string, rediscover func() (string, error)) (*Targets, error) {
	t, err := NewTargets([]string{path})
	if err != nil {
		return nil, err
	}
	t.logf, t.rediscover = logf, rediscover
	return t, nil
}

// current returns the socket paths, after following a discovered socket
// whose path is gone to where it is now. While none is found the old path
// stays, so that requests say Unavailable.
func (t *Targets) current() []string {
	t.mu.Lock()
	paths := slices.Clone(t.paths)
	t.mu.Unlock()
	if t.rediscover == nil {
		return paths
	}
	if _, err := os.Stat(paths[0]); err == nil {
		return paths
	}
	p, err := t.rediscover()
	if err != nil || p == paths[0] {
		return paths
	}
	t.mu.Lock()
	t.paths[0] = p
	t.mu.Unlock()
	t.logf("discover-socket: %s is gone; using %s", paths[0], p)
	return []string{p}
}

// podSocket is the socket's name inside a per-pod directory, as
// tailscale-cni's daemon lays them out: <runDir>/pods/<namespace>_<pod>/tailscaled.sock.
const podSocket = "tailscaled.sock"

// List returns the targets as they are now.
func (t *Targets) List() []Target {
	var out []Target
	for _, p := range t.current() {
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() {
			// A missing socket stays a target: tailscaled may come (back)
			// later, and a request for it should say Unavailable.
			out = append(out, Target{Name: p, Socket: p})
			continue
		}
		out = append(out, dirTargets(p)...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// dirTargets are the targets in directory dir: its *.sock files, and its
// subdirectories that hold a tailscaled.sock. A subdirectory is listed only
// once its socket exists, so that a pod the daemon is still setting up (or
// tearing down) is not offered as a target. When a name is both, the *.sock
// file wins, so that a name always means one socket.
func dirTargets(dir string) []Target {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []Target
	seen := map[string]bool{}
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".sock"); ok && !e.IsDir() {
			out = append(out, Target{Name: name, Socket: filepath.Join(dir, e.Name())})
			seen[name] = true
		}
	}
	for _, e := range ents {
		if seen[e.Name()] || e.Type().IsRegular() {
			continue
		}
		// Stat, not the entry's type: a symlink to a directory counts.
		sock := filepath.Join(dir, e.Name(), podSocket)
		if _, err := os.Stat(sock); err == nil {
			out = append(out, Target{Name: e.Name(), Socket: sock, PodDir: true})
		}
	}
	return out
}

// Default is the target an empty name selects: the only one, when there is
// exactly one.
func (t *Targets) Default() (Target, bool) {
	l := t.List()
	if len(l) == 1 {
		return l[0], true
	}
	return Target{}, false
}

// errUnknownTarget and errNoDefault are mapped to NotFound and
// InvalidArgument.
var (
	errUnknownTarget = errors.New("unknown target")
	errNoDefault     = errors.New("no default target")
)

// Resolve finds the named target.
func (t *Targets) Resolve(name string) (Target, error) {
	l := t.List()
	if name == "" {
		if len(l) == 1 {
			return l[0], nil
		}
		return Target{}, fmt.Errorf("%w: the adapter serves %d targets; name one in the request's target field (%s)",
			errNoDefault, len(l), names(l))
	}
	for _, tg := range l {
		if tg.Name == name {
			return tg, nil
		}
	}
	return Target{}, fmt.Errorf("%w %q; known targets: %s", errUnknownTarget, name, names(l))
}

func names(l []Target) string {
	if len(l) == 0 {
		return "none"
	}
	const max = 20
	var ns []string
	for i, tg := range l {
		if i == max {
			ns = append(ns, fmt.Sprintf("and %d more", len(l)-max))
			break
		}
		ns = append(ns, fmt.Sprintf("%q", tg.Name))
	}
	return strings.Join(ns, ", ")
}

// Client returns the LocalAPI client for tg. Clients dial per request, so a
// restarted tailscaled is picked up without reconnect logic here.
func (t *Targets) Client(tg Target) *local.Client {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.clients[tg.Socket]; ok {
		return c
	}
	c := &local.Client{Socket: tg.Socket, UseSocketOnly: true}
	t.clients[tg.Socket] = c
	return c
}

// ReachableError checks quickly whether tg's daemon answers.
func (t *Targets) ReachableError(ctx context.Context, tg Target) error {
	_, err := t.Client(tg).StatusWithoutPeers(ctx)
	return err
}
