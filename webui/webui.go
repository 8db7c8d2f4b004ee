// Package webui is the TSymbiote WebUI's backend: it finds the adapters on
// the tailnet (devices tagged tag:tsymbiote-adapter), calls them over the
// tailnet through their gRPC service, and serves a browser API (JSON and
// server-sent events) plus the embedded React frontend.
//
// The browser API:
//
//	GET  /api/graph                 devices, peers and edges from every adapter
//	POST /api/fanouts               start a fan-out (ping every peer from every host, DNS)
//	GET  /api/fanouts/{id}          the fan-out so far, as JSON
//	GET  /api/fanouts/{id}/events   the fan-out as server-sent events
//	POST /api/fanouts/{id}/cancel   stop it
//	GET  /api/details?host=&what=   status, prefs, dns, serve, netcheck, derpmap of one host
//	GET  /api/logs?host=            a host's log lines as server-sent events
//	GET  /api/me                    who the caller is
//	GET  /api/access[/...]          access targets and requests (--access)
//	POST /api/access/requests[/{name}/{approve,deny,revoke}]
//	GET  /healthz, /metrics         health and Prometheus metrics
//
// Every request but /healthz is checked against --allowed-users with WhoIs
// on the WebUI's own tsnet node, and every state-changing one against
// cross-site forgery (csrfProtect).
package webui

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/controlplane/tsnode"
	"tsymbiote.dhouti.dev/proto/contract"
)

// Defaults of the webui command's flags.
const (
	// DefaultAdapterPort is the port adapters serve on.
	DefaultAdapterPort    = contract.PortString
	DefaultHostnamePrefix = "tsymbiote-webui"
	DefaultPort           = contract.PortString
)

// DefaultScopes are the OAuth scopes --generate-auth needs.
var DefaultScopes = []string{"auth_keys", "devices:core:read"}

// Config configures Run.
type Config struct {
	AdapterPort    string   // port adapters serve on
	AllowedUsers   []string // login names (or tag:x) allowed in; empty means everyone
	Dev            bool     // serve plain HTTP on 127.0.0.1 instead of the tailnet
	GenerateAuth   bool     // mint an auth key through ControlPlane
	Hostname       string   // the WebUI's tailnet hostname; derived when empty
	HostnamePrefix string
	Logout         bool   // leave the tailnet (and delete the node) on exit
	Port           string // listen port; "0" picks a free one (tests)
	// HealthAddr, when set, is a host:port on which the kubelet's probes
	// are answered over plain HTTP (/healthz, /readyz); off when empty.
	HealthAddr string

	// Access serves the access API (/api/access) and the Access page
	// from AccessStore, or from the cluster's access.tsymbiote.dhouti.dev
	// resources through the in-cluster ServiceAccount when it is nil.
	Access      bool
	AccessStore AccessStore

	// Adapters are adapter addresses (host:port) dialed directly over the
	// host network instead of discovered: for adapters run with --dev.
	Adapters []string

	AuthKey      controlplane.Secret // TS_AUTHKEY, when not GenerateAuth
	ControlURL   string              // where the tsnet node logs in; Tailscale's default when empty
	ControlPlane controlplane.Client // lists adapters, mints keys; nil only with Adapters in dev mode
	StateDir     string              // tsnet state; a temporary directory when empty and Logout

	// RefreshInterval is how often adapters are re-listed; 15s when zero.
	RefreshInterval time.Duration
	// CallTimeout bounds a single adapter call outside fan-outs; 10s when zero.
	CallTimeout time.Duration

	TsnetLogf logger.Logf // tsnet's own logs; discarded when nil

	// OnReady, if set, is called once the WebUI is serving.
	OnReady func(Ready)

	removeStateDir bool // StateDir is a temporary directory Run made
	quiet          bool // tests: no logs
}

// Ready describes a serving WebUI.
type Ready struct {
	Addr     net.Addr // the listener's address
	URL      string   // where a browser reaches it
	Hostname string
	NodeID   string // the WebUI's tailnet node, when it has one
	// TailscaleIPs are the WebUI node's tailnet addresses, when it has one.
	TailscaleIPs []netip.Addr
}

// Validate checks c and names the flag at fault.
func (c *Config) Validate() error {
	if err := checkPort("--port", c.Port, true); err != nil {
		return err
	}
	if err := checkPort("--adapter-port", c.AdapterPort, false); err != nil {
		return err
	}
	if err := tsnode.CheckHostnameFlags(c.Hostname, c.HostnamePrefix); err != nil {
		return err
	}
	if c.HealthAddr != "" {
		if _, port, err := net.SplitHostPort(c.HealthAddr); err != nil || checkPort("--health-addr", port, true) != nil {
			return fmt.Errorf("--health-addr %q: want host:port (or :port)", c.HealthAddr)
		}
	}
	for _, u := range c.AllowedUsers {
		if strings.TrimSpace(u) == "" || strings.ContainsAny(u, " \t") {
			return fmt.Errorf("--allowed-users: %q is not a login name (user@domain) or a tag:name", u)
		}
	}
	for _, a := range c.Adapters {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			return fmt.Errorf("--adapter %q: want host:port", a)
		}
		if err := checkPort("--adapter", port, false); err != nil {
			return err
		}
	}
	if len(c.Adapters) > 0 && !c.Dev {
		return errors.New("--adapter: only with --dev (without it adapters are found on the tailnet)")
	}
	if c.GenerateAuth && !c.AuthKey.IsZero() {
		return errors.New("--generate-auth: TS_AUTHKEY is set too; unset it or pass --generate-auth=false")
	}
	if c.GenerateAuth && c.ControlPlane == nil {
		return errors.New("--generate-auth: no control plane credentials (set TS_OAUTH_CLIENT_ID/TS_OAUTH_CLIENT_SECRET or HEADSCALE_URL/HEADSCALE_API_KEY)")
	}
	if c.ControlPlane == nil && len(c.Adapters) == 0 {
		return errors.New("no control plane credentials to find adapters with (set TS_OAUTH_CLIENT_ID/TS_OAUTH_CLIENT_SECRET or HEADSCALE_URL/HEADSCALE_API_KEY), and no --adapter")
	}
	if c.ControlURL != "" && !strings.HasPrefix(c.ControlURL, "http://") && !strings.HasPrefix(c.ControlURL, "https://") {
		return fmt.Errorf("control URL %q: want an http or https URL", c.ControlURL)
	}
	return nil
}

// needsTailnet reports whether the WebUI runs a tsnet node: always when it
// serves on the tailnet, and in dev mode when adapters are discovered
// (they are reached over the tailnet, and they admit only tagged callers).
func (c *Config) needsTailnet() bool {
	return !c.Dev || len(c.Adapters) == 0
}

func checkPort(flag, p string, zeroOK bool) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !zeroOK) {
		return fmt.Errorf("%s %q: want a TCP port number", flag, p)
	}
	return nil
}

// hostname is --hostname, or the prefix and this machine's name.
func (c *Config) hostname() string {
	return tsnode.Hostname(c.Hostname, c.HostnamePrefix)
}
