package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"tailscale.com/types/logger"
)

// headscaleClient speaks Headscale's REST API (/api/v1, grpc-gateway JSON).
//
// Headscale has no ETag on its policy, so SetPolicy provides the
// compare-and-swap itself: it reads the current policy, compares its hash with
// the caller's version token and writes only if they match. A write by someone
// else between that read and the write (a window of one round trip) is not
// detected; Headscale offers no primitive to close it. Policy writes also need
// Headscale's `policy.mode: database`.
type headscaleClient struct {
	logf       logger.Logf
	base       *url.URL
	apiKey     Secret
	controlURL string
	hc         *http.Client
}

// NewHeadscale returns a Client for the Headscale server at cfg.HeadscaleURL.
func NewHeadscale(logf logger.Logf, cfg Config) (Client, error) {
	if cfg.HeadscaleURL == "" || cfg.HeadscaleAPIKey.IsZero() {
		return nil, fmt.Errorf("control plane: headscale needs %s and %s", EnvHeadscaleURL, EnvHeadscaleAPIKey)
	}
	if err := checkURL(EnvHeadscaleURL, cfg.HeadscaleURL, cfg.secrets()...); err != nil {
		return nil, err
	}
	u, _ := url.Parse(strings.TrimSuffix(cfg.HeadscaleURL, "/"))
	u.User = nil
	return &headscaleClient{
		logf:       logf,
		base:       u,
		apiKey:     cfg.HeadscaleAPIKey,
		controlURL: cfg.EffectiveControlURL(),
		hc:         &http.Client{Timeout: 30 * time.Second},
	}, nil
}

func (c *headscaleClient) Backend() string    { return BackendHeadscale }
func (c *headscaleClient) ControlURL() string { return c.controlURL }

func (c *headscaleClient) Verify(ctx context.Context) error {
	_, err := c.ListDevices(ctx, ListOptions{})
	return err
}

// hsNode is the subset of headscale.v1.Node we use, as grpc-gateway encodes it
// (lowerCamelCase names, 64-bit integers as strings).
type hsNode struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	GivenName   string   `json:"givenName"`
	IPAddresses []string `json:"ipAddresses"`
	User        *struct {
		Name string `json:"name"`
	} `json:"user"`
	LastSeen   *time.Time `json:"lastSeen"`
	Online     bool       `json:"online"`
	Tags       []string   `json:"tags"`
	PreAuthKey *struct {
		Ephemeral bool `json:"ephemeral"`
	} `json:"preAuthKey"`
}

func (n *hsNode) device() Device {
	d := Device{
		ID:       n.ID,
		Name:     n.GivenName,
		Hostname: n.Name,
		Online:   n.Online,
		Tags:     slices.Sorted(slices.Values(n.Tags)),
	}
	if d.Name == "" {
		d.Name = n.Name
	}
	// Headscale keeps a tagged node's registering user; Tailscale reports
	// tagged devices as owned by the tags, and so do we.
	if n.User != nil && len(n.Tags) == 0 {
		d.User = n.User.Name
	}
	if n.LastSeen != nil {
		d.LastSeen = *n.LastSeen
	}
	if n.PreAuthKey != nil {
		d.Ephemeral = n.PreAuthKey.Ephemeral
	}
	d.Addresses = parseAddrs(n.IPAddresses)
	return d
}

// parseAddrs parses tailnet addresses (bare or with a prefix length), IPv4
// first, skipping any it cannot parse.
func parseAddrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Addr())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(a, b netip.Addr) int {
		switch {
		case a.Is4() && !b.Is4():
			return -1
		case !a.Is4() && b.Is4():
			return 1
		}
		return 0
	})
	return out
}

func (c *headscaleClient) ListDevices(ctx context.Context, opts ListOptions) ([]Device, error) {
	var resp struct {
		Nodes []hsNode `json:"nodes"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/node", nil, &resp); err != nil {
		return nil, fmt.Errorf("listing devices: %w", err)
	}
	out := make([]Device, 0, len(resp.Nodes))
	for i := range resp.Nodes {
		d := resp.Nodes[i].device()
		if opts.keep(&d) {
			out = append(out, d)
		}
	}
	return out, nil
}

func (c *headscaleClient) CreateAuthKey(ctx context.Context, req AuthKeyRequest) (*AuthKey, error) {
	if err := validateTags(req.Tags); err != nil {
		return nil, err
	}
	expiry := req.Expiry
	if expiry <= 0 {
		expiry = time.Hour
	}
	body := map[string]any{
		"reusable":   req.Reusable,
		"ephemeral":  req.Ephemeral,
		"expiration": time.Now().Add(expiry).UTC().Format(time.RFC3339Nano),
		"aclTags":    req.Tags,
	}
	var resp struct {
		PreAuthKey struct {
			ID         string    `json:"id"`
			Key        string    `json:"key"`
			Expiration time.Time `json:"expiration"`
			ACLTags    []string  `json:"aclTags"`
		} `json:"preAuthKey"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/preauthkey", body, &resp); err != nil {
		return nil, fmt.Errorf("creating auth key: %w", err)
	}
	k := resp.PreAuthKey
	if k.Key == "" {
		return nil, fmt.Errorf("creating auth key: headscale at %s returned no key", c.base)
	}
	return &AuthKey{ID: k.ID, Key: Secret(k.Key), Expires: k.Expiration, Tags: k.ACLTags}, nil
}

func (c *headscaleClient) DeleteDevice(ctx context.Context, id string) error {
	if id == "" || strings.Trim(id, "0123456789") != "" {
		return fmt.Errorf("deleting device %q: %w (headscale node IDs are numbers)", id, ErrNotFound)
	}
	if err := c.do(ctx, http.MethodDelete, "/api/v1/node/"+id, nil, nil); err != nil {
		return fmt.Errorf("deleting device %s: %w", id, err)
	}
	return nil
}

func (c *headscaleClient) GetPolicy(ctx context.Context) (*Policy, error) {
	var resp struct {
		Policy string `json:"policy"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/policy", nil, &resp); err != nil {
		return nil, fmt.Errorf("getting policy: %w", err)
	}
	return &Policy{Body: resp.Policy, Version: policyVersion(resp.Policy)}, nil
}

func (c *headscaleClient) SetPolicy(ctx context.Context, body, version string) (*Policy, error) {
	if version != "" {
		cur, err := c.GetPolicy(ctx)
		if err != nil {
			return nil, err
		}
		if cur.Version != version {
			return nil, fmt.Errorf("setting policy: %w", ErrPolicyConflict)
		}
	}
	var resp struct {
		Policy string `json:"policy"`
	}
	if err := c.do(ctx, http.MethodPut, "/api/v1/policy", map[string]string{"policy": body}, &resp); err != nil {
		return nil, fmt.Errorf("setting policy: %w", err)
	}
	return &Policy{Body: resp.Policy, Version: policyVersion(resp.Policy)}, nil
}

// policyVersion is the version token of a Headscale policy: a hash of its text.
func policyVersion(body string) string {
	sum := sha256.Sum256([]byte(body))
	return hex.EncodeToString(sum[:16])
}

// do sends one API request. Errors name the server, never the API key.
func (c *headscaleClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey.Reveal())
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("headscale at %s (%s) unreachable: %w", c.base, EnvHeadscaleURL, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("headscale at %s: reading response: %w", c.base, err)
	}
	if res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden {
		return fmt.Errorf("headscale at %s rejected %s (%s): %w", c.base, EnvHeadscaleAPIKey, res.Status, ErrUnauthorized)
	}
	if res.StatusCode/100 != 2 {
		var gwErr struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &gwErr) == nil && gwErr.Message != "" {
			msg = gwErr.Message
		}
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		err := fmt.Errorf("headscale at %s: %s %s: %s: %s", c.base, method, path, res.Status, msg)
		// grpc-gateway maps NotFound to 404; Headscale also reports a
		// missing node as a plain error containing "not found".
		if res.StatusCode == http.StatusNotFound || strings.Contains(strings.ToLower(msg), "not found") {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return err
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("headscale at %s: decoding %s response: %w", c.base, path, err)
		}
	}
	return nil
}

// validateTags checks tags before they reach a backend, so that a typo names
// itself instead of surfacing as a backend's generic 400.
func validateTags(tags []string) error {
	for _, t := range tags {
		name, ok := strings.CutPrefix(t, "tag:")
		if !ok || name == "" || strings.ContainsAny(name, " \t\n,:") {
			return fmt.Errorf("auth key: invalid tag %q: tags look like \"tag:name\"", t)
		}
	}
	return nil
}
