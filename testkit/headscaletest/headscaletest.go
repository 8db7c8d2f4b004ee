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
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/proto/contract"
	"tsymbiote.dhouti.dev/testkit"
)

// Tags the project uses, owned by the harness's user in every policy here.
const (
	TagWebUI   = contract.TagWebUI
	TagAdapter = contract.TagAdapter
	TagPod     = contract.TagPod
	TagTest    = "tag:test" // for nodes that stand in for anything else
)

// tagOwners lets the harness's user own every tag above.
const tagOwners = `  "tagOwners": {
    "` + TagWebUI + `":   ["` + User + `@"],
    "` + TagAdapter + `": ["` + User + `@"],
    "` + TagPod + `":           ["` + User + `@"],
    "` + TagTest + `":              ["` + User + `@"],
  },
`

// webUIAdapterGrant lets the WebUI and the adapters reach each other on
// the adapter port: the WebUI calls the adapters, and the adapters must
// see the WebUI for WhoIs.
const webUIAdapterGrant = `    {
      "src": ["` + TagWebUI + `", "` + TagAdapter + `"],
      "dst": ["` + TagWebUI + `", "` + TagAdapter + `"],
      "ip":  ["tcp:` + contract.PortString + `"],
    },
`

// SeedPolicy is the policy the README asks users to add: the WebUI and the
// adapters may reach each other on the adapter port, and pods may reach
// anything.
const SeedPolicy = "{\n" + tagOwners + `  "grants": [
` + webUIAdapterGrant + `  ],
  "acls": [
    {"action": "accept", "src": ["` + TagPod + `"], "dst": ["*:*"]},
  ],
}
`

// OpenPolicy is SeedPolicy's grant plus a grant that lets every node reach
// every other, so that tests can show that a service's own checks (not
// the network policy) refuse a caller. It is the default.
const OpenPolicy = "{\n" + tagOwners + openGrants + "}\n"

const openGrants = `  "grants": [
` + webUIAdapterGrant + `    {"src": ["*"], "dst": ["*"], "ip": ["*"]},
  ],
`

// NetmapCachePolicy is OpenPolicy that also grants pod nodes the node
// attribute cache-network-maps: a pod's node then keeps its last netmap on
// disk and, when the CNI daemon restarts, starts on it instead of waiting
// for the control plane. Not in the defaults: on a node full of pods the
// caches cost more than they save (the CNI README's recovery section).
const NetmapCachePolicy = "{\n" + tagOwners + `  "nodeAttrs": [
    {"target": ["` + TagPod + `"], "attr": ["cache-network-maps"]},
  ],
` + openGrants + "}\n"

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
	// Binary overrides the headscale binary: $HEADSCALE_BIN, or the pinned
	// build in ./bin, when empty.
	Binary string
	// Logf receives Headscale's output; discarded when nil.
	Logf logger.Logf
	// DefaultBatching keeps Headscale's own batching of node-store writes
	// (500 ms) and peer updates (800 ms), what users run, instead of the
	// shortened one tests use; benchmarks measure against it.
	DefaultBatching bool
}

// Server is a running Headscale. Tests reach its API with a control-plane
// client of their own, configured from Getenv or Env.
type Server struct {
	URL    string // server_url: the control URL and API base
	APIKey string // an API key for URL; a secret: never log it
	Dir    string // temporary directory holding config, keys, DB and socket
	STUN   string // host:port of the STUN server

	binary   string
	cfgPath  string
	proc     *testkit.Process
	stopOnce sync.Once
	ownDir   bool
}

// Environment variables naming a Headscale, as every daemon reads them.
const (
	EnvURL    = "HEADSCALE_URL"
	EnvAPIKey = "HEADSCALE_API_KEY"
)

// Getenv answers EnvURL and EnvAPIKey for this server and "" otherwise, in
// the shape of os.Getenv, for a control-plane configuration read from the
// environment.
func (s *Server) Getenv(key string) string {
	switch key {
	case EnvURL:
		return s.URL
	case EnvAPIKey:
		return s.APIKey
	}
	return ""
}

// Env is the environment that points a daemon at this server.
func (s *Server) Env() []string {
	return []string{EnvURL + "=" + s.URL, EnvAPIKey + "=" + s.APIKey}
}

// Start starts a Server for t and stops it when t ends. Without the
// headscale binary it skips t, or fails it under CI=true.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	testkit.Integration(t)
	if opts.Binary == "" && os.Getenv("HEADSCALE_BIN") == "" {
		opts.Binary = testkit.Binary(t, "headscale")
	}
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
		if bin, err = binary(); err != nil {
			return nil, err
		}
	}
	s := &Server{binary: bin}
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
	ports, err := testkit.FreePorts(host, 3)
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
		s.STUN, host, opts.DefaultBatching)), 0o600); err != nil {
		return nil, err
	}

	cmd := exec.Command(bin, "serve", "-c", s.cfgPath)
	cmd.Dir = dir
	if opts.Logf != nil {
		w := &lineWriter{logf: opts.Logf}
		cmd.Stdout, cmd.Stderr = w, w
	}
	// Headscale must not outlive a test binary that dies without cleanup.
	if s.proc, err = testkit.Launch(cmd); err != nil {
		return nil, err
	}
	if err := s.waitHealthy(ctx); err != nil {
		return nil, fmt.Errorf("%w; last output:\n%s", err, s.proc.Output())
	}
	if _, err := s.cli(ctx, "users", "create", User); err != nil {
		return nil, err
	}
	key, err := s.cli(ctx, "apikeys", "create", "--expiration", "8760h")
	if err != nil {
		return nil, err
	}
	s.APIKey = lastLine(key)
	policy := opts.Policy
	if policy == "" {
		policy = OpenPolicy
	}
	if err := s.api(ctx, http.MethodPut, "/api/v1/policy", map[string]string{"policy": policy}, nil); err != nil {
		return nil, fmt.Errorf("setting initial policy: %w", err)
	}
	return s, nil
}

// Stop kills Headscale and removes the directory if Start made it. It is safe
// to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.proc != nil {
			_ = s.proc.Stop(5 * time.Second)
		}
		if s.ownDir {
			os.RemoveAll(s.Dir)
		}
	})
}

// KeyOptions shape an auth key AuthKey mints.
type KeyOptions struct {
	Tags      []string // the tags nodes registered with it get
	Ephemeral bool     // its nodes are removed when they go offline
	Reusable  bool     // it may register more than one node
}

// AuthKey mints a preauthorized key with opts.Tags that expires in an
// hour, through Headscale's API (as the project's control-plane client
// does).
func (s *Server) AuthKey(ctx context.Context, opts KeyOptions) (string, error) {
	req := map[string]any{
		"aclTags":    opts.Tags,
		"ephemeral":  opts.Ephemeral,
		"reusable":   opts.Reusable,
		"expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	}
	var resp struct {
		PreAuthKey struct {
			Key string `json:"key"`
		} `json:"preAuthKey"`
	}
	if err := s.api(ctx, http.MethodPost, "/api/v1/preauthkey", req, &resp); err != nil {
		return "", fmt.Errorf("minting a %v key: %w", opts.Tags, err)
	}
	return resp.PreAuthKey.Key, nil
}

// api calls Headscale's REST API with the server's API key. Errors carry
// the status and body, never the key.
func (s *Server) api(ctx context.Context, method, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.APIKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, res.Status, bytes.TrimSpace(data))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// UserAuthKey mints a key that registers nodes owned by User, without tags,
// through the CLI (the API only mints tagged keys).
func (s *Server) UserAuthKey(ctx context.Context, ephemeral bool) (string, error) {
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
	return lastLine(key), nil
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
		case <-s.proc.Done():
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

func configYAML(dir, listen, metrics, grpcAddr, stun, host string, defaultBatching bool) string {
	tuning := shortBatching
	if defaultBatching {
		tuning = ""
	}
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
%[7]s`, dir, listen, metrics, grpcAddr, stun, host, tuning)
}

// shortBatching is the tuning tests run with. Headscale batches node-store
// writes (500 ms) and peer updates (800 ms) to spare big tailnets; a test
// tailnet of a few nodes only waits on them (a node's registration, first
// map and peers' news of it each took one or two batches). Headscale's own
// tests shorten the first to 5 ms.
const shortBatching = `tuning:
  node_store_batch_timeout: 10ms
  batch_change_delay: 50ms
`

func freeUDPPort(host string) (int, error) {
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free UDP port on %s: %w", host, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// binary returns the headscale binary: $HEADSCALE_BIN, or the pinned build.
func binary() (string, error) {
	if p := os.Getenv("HEADSCALE_BIN"); p != "" {
		return p, nil
	}
	return testkit.FindBinary("headscale")
}

// lineWriter forwards output to logf a line at a time.
type lineWriter struct {
	logf logger.Logf
}

func (w *lineWriter) Write(p []byte) (int, error) {
	for line := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
		w.logf("headscale: %s", line)
	}
	return len(p), nil
}

// CreateUser creates a Headscale user through the API and returns its ID.
// A user with an email logs in (and is named in policies) as that email,
// which is how tests stand in for a tailnet login like alice@example.com.
func (s *Server) CreateUser(ctx context.Context, name, email string) (string, error) {
	var resp struct {
		User struct {
			ID json.Number `json:"id"`
		} `json:"user"`
	}
	if err := s.api(ctx, http.MethodPost, "/api/v1/user", map[string]string{"name": name, "email": email}, &resp); err != nil {
		return "", fmt.Errorf("creating user %q: %w", name, err)
	}
	return resp.User.ID.String(), nil
}

// UserKey mints a key that registers an untagged node owned by the user
// with the given ID (from CreateUser), through the CLI.
func (s *Server) UserKey(ctx context.Context, userID string, ephemeral bool) (string, error) {
	args := []string{"preauthkeys", "create", "--user", userID, "--expiration", "1h"}
	if ephemeral {
		args = append(args, "--ephemeral")
	}
	key, err := s.cli(ctx, args...)
	if err != nil {
		return "", err
	}
	return lastLine(key), nil
}
