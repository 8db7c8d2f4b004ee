// Package headscaletest runs a real Headscale server (the binary that `make
// tools` builds into ./bin) on loopback for tests and the demo, and joins tsnet
// nodes to it without touching anything outside the machine.
//
// Each Server lives in its own temporary directory with its own free ports,
// an embedded DERP and STUN server on 127.0.0.1, a user, an API key and a
// policy stored in the database (so policy writes work). Stop, or the test's
// cleanup, kills the process and removes the directory.
package headscaletest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
)

// Tags the project uses, owned by the harness's user in every policy here.
const (
	TagWebUI   = "tag:tsymbiote-webui"
	TagAdapter = "tag:tsymbiote-adapter"
	TagPod     = "tag:k8s-pod"
)

// SeedPolicy is the policy the README asks users to add: the WebUI and the
// adapters may reach each other on tcp:3621, and pods may reach anything.
const SeedPolicy = `{
  "tagOwners": {
    "tag:tsymbiote-webui":   ["tsymbiote@"],
    "tag:tsymbiote-adapter": ["tsymbiote@"],
    "tag:k8s-pod":           ["tsymbiote@"],
    "tag:test":              ["tsymbiote@"],
  },
  "grants": [
    // The WebUI must be able to talk to the adapters, and the adapters must
    // be able to see the WebUI for WhoIs.
    {
      "src": ["tag:tsymbiote-webui", "tag:tsymbiote-adapter"],
      "dst": ["tag:tsymbiote-webui", "tag:tsymbiote-adapter"],
      "ip":  ["tcp:3621"],
    },
  ],
  "acls": [
    {"action": "accept", "src": ["tag:k8s-pod"], "dst": ["*:*"]},
  ],
}
`

// OpenPolicy is SeedPolicy plus a rule that lets every node reach every
// other, so that tests can show that a service's own checks (not the network
// policy) refuse a caller. It is the default.
const OpenPolicy = `{
  "tagOwners": {
    "tag:tsymbiote-webui":   ["tsymbiote@"],
    "tag:tsymbiote-adapter": ["tsymbiote@"],
    "tag:k8s-pod":           ["tsymbiote@"],
    "tag:test":              ["tsymbiote@"],
  },
  "grants": [
    {
      "src": ["tag:tsymbiote-webui", "tag:tsymbiote-adapter"],
      "dst": ["tag:tsymbiote-webui", "tag:tsymbiote-adapter"],
      "ip":  ["tcp:3621"],
    },
    {"src": ["*"], "dst": ["*"], "ip": ["*"]},
  ],
}
`

// User is the Headscale user the harness creates.
const User = "tsymbiote"

// Options configure a Server. The zero value is ready to use.
type Options struct {
	// Policy is the initial policy; OpenPolicy when empty.
	Policy string
	// ListenAddr is the host (no port) Headscale, DERP and STUN listen on;
	// 127.0.0.1 when empty. Tests whose nodes live in network namespaces
	// pass a host-side veth address, as a namespace cannot reach the host's
	// loopback.
	ListenAddr string
	// Binary overrides the headscale binary; see Binary.
	Binary string
	// Logf receives Headscale's output; discarded when nil.
	Logf logger.Logf
}

// Server is a running Headscale.
type Server struct {
	URL    string              // server_url: the control URL and API base
	APIKey controlplane.Secret // an API key for URL
	Client controlplane.Client // a Headscale client using APIKey
	Config controlplane.Config // the configuration Client was made from
	Dir    string              // temporary directory holding config, keys, DB and socket
	STUN   string              // host:port of the STUN server

	binary   string
	cfgPath  string
	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
	ownDir   bool
}

// Start starts a Server for t and stops it when t ends. It fails t when the
// headscale binary has not been built.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := StartIn(ctx, dir, opts)
	if err != nil {
		t.Fatalf("starting headscale: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartIn starts a Server whose files live in dir (created if needed). The
// caller must call Stop. An empty dir means a new temporary directory that
// Stop removes.
func StartIn(ctx context.Context, dir string, opts Options) (_ *Server, err error) {
	bin := opts.Binary
	if bin == "" {
		if bin, err = Binary(); err != nil {
			return nil, err
		}
	}
	s := &Server{binary: bin, done: make(chan struct{})}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "headscaletest-"); err != nil {
			return nil, err
		}
		s.ownDir = true
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s.Dir = dir
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()

	host := opts.ListenAddr
	if host == "" {
		host = "127.0.0.1"
	}
	ports, err := freeTCPPorts(host, 3)
	if err != nil {
		return nil, err
	}
	stunPort, err := freeUDPPort(host)
	if err != nil {
		return nil, err
	}
	listen := net.JoinHostPort(host, fmt.Sprint(ports[0]))
	s.URL = "http://" + listen
	s.STUN = net.JoinHostPort(host, fmt.Sprint(stunPort))
	s.cfgPath = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(s.cfgPath, []byte(configYAML(dir, listen,
		net.JoinHostPort(host, fmt.Sprint(ports[1])),
		net.JoinHostPort(host, fmt.Sprint(ports[2])),
		s.STUN, host)), 0o600); err != nil {
		return nil, err
	}

	s.cmd = exec.Command(bin, "serve", "-c", s.cfgPath)
	s.cmd.Dir = dir
	out := &logWriter{logf: opts.Logf}
	s.cmd.Stdout, s.cmd.Stderr = out, out
	// Headscale must not outlive a test binary that dies without cleanup.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()

	if err := s.waitHealthy(ctx); err != nil {
		return nil, fmt.Errorf("%w; last output:\n%s", err, out.tail())
	}
	if _, err := s.cli(ctx, "users", "create", User); err != nil {
		return nil, err
	}
	key, err := s.cli(ctx, "apikeys", "create", "--expiration", "8760h")
	if err != nil {
		return nil, err
	}
	s.APIKey = controlplane.Secret(lastLine(key))
	s.Config = controlplane.Config{HeadscaleURL: s.URL, HeadscaleAPIKey: s.APIKey}
	if s.Client, err = controlplane.New(logger.Discard, s.Config); err != nil {
		return nil, err
	}
	policy := opts.Policy
	if policy == "" {
		policy = OpenPolicy
	}
	if _, err := s.Client.SetPolicy(ctx, policy, ""); err != nil {
		return nil, fmt.Errorf("setting initial policy: %w", err)
	}
	return s, nil
}

// Stop kills Headscale and removes the directory if Start made it. It is safe
// to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.done
			}
		}
		if s.ownDir {
			os.RemoveAll(s.Dir)
		}
	})
}

// UserAuthKey mints a key that registers nodes owned by User, without tags,
// through the CLI (the API client only mints tagged keys).
func (s *Server) UserAuthKey(ctx context.Context, ephemeral bool) (controlplane.Secret, error) {
	out, err := s.cli(ctx, "users", "list", "-o", "json")
	if err != nil {
		return "", err
	}
	var users []struct {
		ID   json.Number `json:"id"`
		Name string      `json:"name"`
	}
	if err := json.Unmarshal([]byte(out), &users); err != nil {
		return "", fmt.Errorf("parsing users list: %w", err)
	}
	var id string
	for _, u := range users {
		if u.Name == User {
			id = u.ID.String()
		}
	}
	if id == "" {
		return "", fmt.Errorf("user %q not found", User)
	}
	args := []string{"preauthkeys", "create", "--user", id, "--expiration", "1h"}
	if ephemeral {
		args = append(args, "--ephemeral")
	}
	key, err := s.cli(ctx, args...)
	if err != nil {
		return "", err
	}
	return controlplane.Secret(lastLine(key)), nil
}

func (s *Server) waitHealthy(ctx context.Context) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/health", nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("headscale exited during start-up")
		case <-ctx.Done():
			return fmt.Errorf("headscale at %s not healthy: %w", s.URL, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cli runs a headscale CLI command against this server's socket.
func (s *Server) cli(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.binary, append([]string{"-c", s.cfgPath, "--force"}, args...)...)
	cmd.Dir = s.Dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// Never echo stdout: for key commands it holds the secret.
		return "", fmt.Errorf("headscale %s: %w: %s", args[0]+" "+args[1], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func configYAML(dir, listen, metrics, grpcAddr, stun, host string) string {
	return fmt.Sprintf(`server_url: http://%[2]s
listen_addr: %[2]s
metrics_listen_addr: %[3]s
grpc_listen_addr: %[4]s
grpc_allow_insecure: false
noise:
  private_key_path: %[1]s/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: true
    region_id: 999
    region_code: local
    region_name: Headscale embedded DERP
    verify_clients: true
    stun_listen_addr: %[5]s
    private_key_path: %[1]s/derp_server_private.key
    automatically_add_embedded_derp_region: true
    ipv4: %[6]s
    # It listens on an IPv4 address only: "none" keeps clients from probing
    # it over IPv6 (and their first netcheck from waiting for that probe).
    ipv6: none
  urls: []
  paths: []
  auto_update_enabled: false
disable_check_updates: true
node:
  ephemeral:
    inactivity_timeout: 30m
database:
  type: sqlite
  sqlite:
    path: %[1]s/db.sqlite
    write_ahead_log: true
log:
  level: warn
  format: text
policy:
  mode: database
dns:
  magic_dns: true
  base_domain: tsymbiote.test
  override_local_dns: false
  nameservers:
    global: []
unix_socket: %[1]s/headscale.sock
unix_socket_permission: "0770"
logtail:
  enabled: false
taildrop:
  enabled: false
# Headscale batches node-store writes (500 ms) and peer updates (800 ms) to
# spare big tailnets; a test tailnet of a few nodes only waits on them (a
# node's registration, first map and peers' news of it each took one or two
# batches). Headscale's own tests shorten the first to 5 ms.
tuning:
  node_store_batch_timeout: 10ms
  batch_change_delay: 50ms
`, dir, listen, metrics, grpcAddr, stun, host)
}

func freeTCPPorts(host string, n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("finding a free port on %s: %w", host, err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func freeUDPPort(host string) (int, error) {
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free UDP port on %s: %w", host, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// Binary returns the path of the pinned headscale binary: $HEADSCALE_BIN, or
// bin/headscale-<version> at the repository root.
func Binary() (string, error) {
	if p := os.Getenv("HEADSCALE_BIN"); p != "" {
		return p, nil
	}
	return RepoBinary("headscale", "HEADSCALE_VERSION")
}

// RepoBinary finds bin/<name>-<version> at the repository root, where version
// is the value of versionVar in hack/versions.env.
func RepoBinary(name, versionVar string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	v, err := PinnedVersion(versionVar)
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "bin", name+"-"+v)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s %s not built (%s missing): run `make tools`", name, v, p)
	}
	return p, nil
}

// RepoRoot finds the repository root by walking up from the working
// directory to the directory holding hack/versions.env.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "versions.env")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (with hack/versions.env) not found above the working directory")
		}
		dir = parent
	}
}

// PinnedVersion returns a version pinned in hack/versions.env.
func PinnedVersion(name string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(root, "hack", "versions.env"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k == name {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s not pinned in hack/versions.env", name)
}

// logWriter forwards output to logf and keeps the last few KiB for errors.
type logWriter struct {
	logf logger.Logf
	mu   sync.Mutex
	buf  []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > 8<<10 {
		w.buf = w.buf[len(w.buf)-8<<10:]
	}
	w.mu.Unlock()
	if w.logf != nil {
		for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
			w.logf("headscale: %s", line)
		}
	}
	return len(p), nil
}

func (w *logWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
