// Package proxyconfig is the configuration the operator writes for a tsymbiote-proxy and the proxy reads.
//
// The operator keeps it as JSON under [ConfigKey] of the proxy's config
// Secret, beside the PEM certificates and keys the HTTPS routes name. The
// proxy reports what the tailnet made of it as annotations on its own state
// Secret ([AnnotationFQDN], [AnnotationIPs], [AnnotationDeviceID]).
package proxyconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Keys and names shared by the operator and the proxy.
const (
	// ConfigKey is the data key of the config Secret holding the JSON Config.
	ConfigKey = "config.json"

	// EnvConfigSecret names the config Secret, in the pod's namespace.
	EnvConfigSecret = "TSYMBIOTE_PROXY_CONFIG_SECRET"
	// EnvStateSecret names the Secret the proxy keeps its node state in and
	// annotates with its status.
	EnvStateSecret = "TSYMBIOTE_PROXY_STATE_SECRET"
	// EnvPodNamespace is the pod's namespace (downward API).
	EnvPodNamespace = "POD_NAMESPACE"
	// EnvAuthKey is the auth key the proxy joins the tailnet with.
	EnvAuthKey = "TS_AUTHKEY"
	// EnvControlURL is the control server; empty means Tailscale's.
	EnvControlURL = "TS_CONTROL_URL"

	// AnnotationFQDN is the proxy's tailnet FQDN, without the trailing dot.
	AnnotationFQDN = "tsymbiote.dhouti.dev/proxy-fqdn"
	// AnnotationIPs is the proxy's tailnet addresses, comma separated, IPv4 first.
	AnnotationIPs = "tsymbiote.dhouti.dev/proxy-ips"
	// AnnotationDeviceID is the proxy's node ID as the control plane knows it
	// (tailcfg.StableNodeID; Headscale's numeric ID is the same string).
	AnnotationDeviceID = "tsymbiote.dhouti.dev/proxy-device-id"
	// AnnotationConfigGeneration is the Config.Generation the proxy applied last.
	AnnotationConfigGeneration = "tsymbiote.dhouti.dev/proxy-config-generation"
	// AnnotationConfigError says why the proxy did not apply the config
	// Secret's current content (it keeps serving the one applied last);
	// absent when the current content is applied.
	AnnotationConfigError = "tsymbiote.dhouti.dev/proxy-config-error"

	// DefaultMetricsAddr is where the proxy serves /metrics, /healthz and /readyz.
	DefaultMetricsAddr = ":9002"
)

// Protocols of a Forward.
const (
	ProtocolTCP = "TCP"
	ProtocolUDP = "UDP"
)

// Path types of a Route, as networking.k8s.io/v1 spells them.
const (
	PathTypePrefix                 = "Prefix"
	PathTypeExact                  = "Exact"
	PathTypeImplementationSpecific = "ImplementationSpecific"
)

// Config is everything one proxy serves.
type Config struct {
	// Generation increases with each change the operator writes; the proxy
	// reports the one it applied (metric and AnnotationConfigGeneration).
	Generation int64 `json:"generation,omitempty"`
	// Hostname is the tailnet hostname: a DNS label.
	Hostname string `json:"hostname"`
	// Tags the node advertises ("tag:x").
	Tags []string `json:"tags,omitempty"`
	// Forwards are L4 exposures (Service exposure, LoadBalancer class).
	Forwards []Forward `json:"forwards,omitempty"`
	// HTTP is the L7 reverse proxy (Ingress); nil when there is none.
	HTTP *HTTP `json:"http,omitempty"`
	// AdvertiseRoutes makes the proxy a subnet router for these prefixes.
	AdvertiseRoutes []netip.Prefix `json:"advertiseRoutes,omitempty"`
}

// Forward is one tailnet port forwarded to a target.
type Forward struct {
	Service  string `json:"service"`  // "namespace/name", for metrics and logs
	Protocol string `json:"protocol"` // ProtocolTCP or ProtocolUDP
	Port     uint16 `json:"port"`     // tailnet port
	Target   string `json:"target"`   // "host:port", usually ClusterIP:port
}

// HTTP is the reverse proxy of an Ingress.
type HTTP struct {
	Routes []Route `json:"routes,omitempty"`
	TLS    []TLS   `json:"tls,omitempty"`
	// TailnetCert serves HTTPS with the tailnet's own certificate for the
	// node's FQDN when no TLS entry covers the name.
	TailnetCert bool `json:"tailnetCert,omitempty"`
	// RedirectHTTP makes port 80 answer 308 to https instead of routing.
	RedirectHTTP bool `json:"redirectHTTP,omitempty"`
}

// Route is one Ingress rule path.
type Route struct {
	Host     string `json:"host,omitempty"` // "" matches any host; "*.example.com" one label
	Path     string `json:"path,omitempty"` // "" is "/"
	PathType string `json:"pathType,omitempty"`
	Backend  string `json:"backend"`           // "ip:port"
	Service  string `json:"service,omitempty"` // "namespace/name", for metrics
}

// TLS is one certificate, kept in the config Secret under CertKey and KeyKey.
type TLS struct {
	Hosts   []string `json:"hosts,omitempty"` // SNI names; empty = default certificate
	CertKey string   `json:"certKey"`         // data key of the PEM certificate chain
	KeyKey  string   `json:"keyKey"`          // data key of the PEM private key
}

// Parse decodes and validates a Config. Unknown fields are errors, so that a
// proxy older than its operator says so instead of ignoring what it cannot do.
func Parse(b []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", ConfigKey, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("decoding %s: trailing data after the object", ConfigKey)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Marshal encodes c as the operator stores it, after validating it.
func Marshal(c *Config) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(c)
}

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	tagName  = regexp.MustCompile(`^tag:[a-zA-Z][a-zA-Z0-9-]*$`)
	dataKey  = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

// ValidHostname reports whether h can be a tailnet hostname: one lowercase DNS label.
func ValidHostname(h string) error {
	if !dnsLabel.MatchString(h) {
		return fmt.Errorf("%q is not a DNS label (lowercase letters, digits and '-', 1-63 characters, no '-' at either end)", h)
	}
	return nil
}

// ValidTag reports whether t is a tag name such as "tag:k8s".
func ValidTag(t string) error {
	if !tagName.MatchString(t) {
		return fmt.Errorf("%q is not a tag (want tag:<letter>[letters, digits, '-'])", t)
	}
	return nil
}

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	if c.Generation < 0 {
		return fmt.Errorf("generation: %d is negative", c.Generation)
	}
	if err := ValidHostname(c.Hostname); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	for i, t := range c.Tags {
		if err := ValidTag(t); err != nil {
			return fmt.Errorf("tags[%d]: %w", i, err)
		}
	}
	type portProto struct {
		port  uint16
		proto string
	}
	seen := map[portProto]int{}
	for i, f := range c.Forwards {
		if err := f.validate(); err != nil {
			return fmt.Errorf("forwards[%d]: %w", i, err)
		}
		k := portProto{f.Port, f.Protocol}
		if j, ok := seen[k]; ok {
			return fmt.Errorf("forwards[%d]: %s port %d already forwarded by forwards[%d]", i, f.Protocol, f.Port, j)
		}
		seen[k] = i
	}
	if c.HTTP != nil {
		for _, p := range []uint16{80, 443} {
			if j, ok := seen[portProto{p, ProtocolTCP}]; ok {
				return fmt.Errorf("forwards[%d]: TCP port %d is the HTTP proxy's", j, p)
			}
		}
		if err := c.HTTP.validate(); err != nil {
			return fmt.Errorf("http: %w", err)
		}
	}
	for i, p := range c.AdvertiseRoutes {
		if !p.IsValid() {
			return fmt.Errorf("advertiseRoutes[%d]: invalid prefix", i)
		}
		if p != p.Masked() {
			return fmt.Errorf("advertiseRoutes[%d]: %s has host bits set (want %s)", i, p, p.Masked())
		}
		for j := range i {
			if q := c.AdvertiseRoutes[j]; q.Overlaps(p) {
				return fmt.Errorf("advertiseRoutes[%d]: %s overlaps advertiseRoutes[%d] %s", i, p, j, q)
			}
		}
	}
	return nil
}

func (f *Forward) validate() error {
	if f.Service != "" {
		if err := validService(f.Service); err != nil {
			return fmt.Errorf("service: %w", err)
		}
	}
	switch f.Protocol {
	case ProtocolTCP, ProtocolUDP:
	default:
		return fmt.Errorf("protocol: %q is not TCP or UDP", f.Protocol)
	}
	if f.Port == 0 {
		return errors.New("port: must be 1-65535")
	}
	if err := validHostPort(f.Target); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return nil
}

func (h *HTTP) validate() error {
	for i, r := range h.Routes {
		if err := r.validate(); err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
	}
	for i, t := range h.TLS {
		for j, host := range t.Hosts {
			if err := validHost(host); err != nil {
				return fmt.Errorf("tls[%d].hosts[%d]: %w", i, j, err)
			}
		}
		if !dataKey.MatchString(t.CertKey) {
			return fmt.Errorf("tls[%d].certKey: %q is not a Secret data key", i, t.CertKey)
		}
		if !dataKey.MatchString(t.KeyKey) {
			return fmt.Errorf("tls[%d].keyKey: %q is not a Secret data key", i, t.KeyKey)
		}
		if t.CertKey == ConfigKey || t.KeyKey == ConfigKey {
			return fmt.Errorf("tls[%d]: %q holds the config, not a certificate", i, ConfigKey)
		}
		if t.CertKey == t.KeyKey {
			return fmt.Errorf("tls[%d]: certKey and keyKey are both %q", i, t.CertKey)
		}
	}
	return nil
}

func (r *Route) validate() error {
	if r.Host != "" {
		if err := validHost(r.Host); err != nil {
			return fmt.Errorf("host: %w", err)
		}
	}
	switch r.PathType {
	case "", PathTypePrefix, PathTypeExact, PathTypeImplementationSpecific:
	default:
		return fmt.Errorf("pathType: %q is not Prefix, Exact or ImplementationSpecific", r.PathType)
	}
	if r.Path != "" && !strings.HasPrefix(r.Path, "/") {
		return fmt.Errorf("path: %q does not start with /", r.Path)
	}
	if strings.ContainsAny(r.Path, "?#") {
		return fmt.Errorf("path: %q holds a query or fragment", r.Path)
	}
	if err := validHostPort(r.Backend); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	if r.Service != "" {
		if err := validService(r.Service); err != nil {
			return fmt.Errorf("service: %w", err)
		}
	}
	return nil
}

// validHost accepts a lowercase DNS name, optionally with a leading "*." wildcard.
func validHost(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("%q is not a DNS name", h)
	}
	for l := range strings.SplitSeq(name, ".") {
		if !dnsLabel.MatchString(l) {
			return fmt.Errorf("%q is not a lowercase DNS name", h)
		}
	}
	return nil
}

func validHostPort(hp string) error {
	host, port, err := splitHostPort(hp)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q has no host", hp)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if verr := validHost(host); verr != nil {
			return fmt.Errorf("%q: host is neither an IP address nor a DNS name", hp)
		}
	}
	if port == 0 {
		return fmt.Errorf("%q: port must be 1-65535", hp)
	}
	return nil
}

func splitHostPort(hp string) (string, uint16, error) {
	i := strings.LastIndexByte(hp, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("%q is not host:port", hp)
	}
	host, ps := hp[:i], hp[i+1:]
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return "", 0, fmt.Errorf("%q is not host:port", hp)
		}
		host = host[1 : len(host)-1]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", 0, fmt.Errorf("%q: bracketed host is not an IPv6 address", hp)
		}
	} else if strings.Contains(host, ":") {
		return "", 0, fmt.Errorf("%q: an IPv6 host needs brackets", hp)
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q: port %q is not a number 1-65535", hp, ps)
	}
	return host, uint16(p), nil
}

func validService(s string) error {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || !dnsLabel.MatchString(ns) || name == "" || len(name) > 253 {
		return fmt.Errorf("%q is not namespace/name", s)
	}
	for l := range strings.SplitSeq(name, ".") {
		if !dnsLabel.MatchString(l) {
			return fmt.Errorf("%q is not namespace/name", s)
		}
	}
	return nil
}
