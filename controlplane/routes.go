package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// RouteApprover reads and approves the subnet routes a device advertises.
// Both backends implement it; get it from a Client with [Routes].
//
// It is apart from Client so that fakes of Client that do not route need
// not implement it.
type RouteApprover interface {
	// Routes returns the routes the device advertises and those the
	// control plane has approved (which may include routes it no longer
	// advertises), each sorted.
	Routes(ctx context.Context, id string) (advertised, approved []netip.Prefix, err error)

	// SetApprovedRoutes replaces the device's approved routes with routes;
	// an empty list withdraws every approval.
	SetApprovedRoutes(ctx context.Context, id string, routes []netip.Prefix) error
}

// Routes returns c's RouteApprover, or an error saying that c cannot
// approve routes.
func Routes(c Client) (RouteApprover, error) {
	if ra, ok := c.(RouteApprover); ok {
		return ra, nil
	}
	return nil, fmt.Errorf("the %s control plane client cannot approve routes", c.Backend())
}

// CertIssuer is implemented by clients that know whether their control
// plane issues TLS certificates for MagicDNS names (Tailscale's
// `tailscale cert`).
type CertIssuer interface {
	IssuesCertificates() bool
}

// IssuesCertificates reports whether nodes of c's tailnet can get a TLS
// certificate for their MagicDNS name from the control plane. Headscale
// cannot; Tailscale can when the tailnet has HTTPS certificates turned on,
// which its API does not say, so a node's first request is the real test.
func IssuesCertificates(c Client) bool {
	ci, ok := c.(CertIssuer)
	return ok && ci.IssuesCertificates()
}

// IssuesCertificates implements CertIssuer: Headscale has no ACME
// integration for its nodes.
func (c *headscaleClient) IssuesCertificates() bool { return false }

// IssuesCertificates implements CertIssuer.
func (c *tailscaleClient) IssuesCertificates() bool { return true }

// ParsePrefixes parses routes (CIDR strings), masking each and naming the
// first bad one. what names the input in errors.
func ParsePrefixes(what string, routes []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(routes))
	for _, r := range routes {
		p, err := netip.ParsePrefix(strings.TrimSpace(r))
		if err != nil {
			return nil, fmt.Errorf("%s: invalid route %q: want a CIDR such as 10.96.0.0/12", what, r)
		}
		out = append(out, p.Masked())
	}
	return sortPrefixes(out), nil
}

// sortPrefixes sorts and de-duplicates ps in place.
func sortPrefixes(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(ps)
}

// prefixStrings is ps sorted, de-duplicated and as strings, so that
// requests do not depend on the caller's order.
func prefixStrings(ps []netip.Prefix) []string {
	ps = sortPrefixes(slices.Clone(ps))
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// headscaleID checks a Headscale node ID, which is a number.
func headscaleID(what, id string) error {
	if id == "" || strings.Trim(id, "0123456789") != "" {
		return fmt.Errorf("%s %q: %w (headscale node IDs are numbers)", what, id, ErrNotFound)
	}
	return nil
}

// Routes implements RouteApprover with GET /api/v1/node/{id}:
// availableRoutes are those the node announces, approvedRoutes those an
// admin (or autoApprovers) approved.
func (c *headscaleClient) Routes(ctx context.Context, id string) (advertised, approved []netip.Prefix, err error) {
	if err := headscaleID("routes of device", id); err != nil {
		return nil, nil, err
	}
	var resp struct {
		Node struct {
			AvailableRoutes []string `json:"availableRoutes"`
			ApprovedRoutes  []string `json:"approvedRoutes"`
		} `json:"node"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/node/"+id, nil, &resp); err != nil {
		return nil, nil, fmt.Errorf("routes of device %s: %w", id, err)
	}
	if advertised, err = ParsePrefixes("headscale availableRoutes", resp.Node.AvailableRoutes); err != nil {
		return nil, nil, err
	}
	if approved, err = ParsePrefixes("headscale approvedRoutes", resp.Node.ApprovedRoutes); err != nil {
		return nil, nil, err
	}
	return advertised, approved, nil
}

// SetApprovedRoutes implements RouteApprover with POST
// /api/v1/node/{id}/approve_routes, which replaces the approved set.
func (c *headscaleClient) SetApprovedRoutes(ctx context.Context, id string, routes []netip.Prefix) error {
	if err := headscaleID("approving routes of device", id); err != nil {
		return err
	}
	body := map[string][]string{"routes": prefixStrings(routes)}
	if err := c.do(ctx, http.MethodPost, "/api/v1/node/"+id+"/approve_routes", body, nil); err != nil {
		return fmt.Errorf("approving routes %v of device %s: %w", routes, id, err)
	}
	return nil
}

// Routes implements RouteApprover with GET /api/v2/device/{id}/routes.
func (c *tailscaleClient) Routes(ctx context.Context, id string) (advertised, approved []netip.Prefix, err error) {
	if id == "" {
		return nil, nil, fmt.Errorf("routes of device: empty ID: %w", ErrNotFound)
	}
	r, err := c.api.Devices().SubnetRoutes(ctx, id)
	if err != nil {
		return nil, nil, fmt.Errorf("routes of device %s: %w", id, c.wrap(err))
	}
	if advertised, err = ParsePrefixes("tailscale advertisedRoutes", r.Advertised); err != nil {
		return nil, nil, err
	}
	if approved, err = ParsePrefixes("tailscale enabledRoutes", r.Enabled); err != nil {
		return nil, nil, err
	}
	return advertised, approved, nil
}

// SetApprovedRoutes implements RouteApprover with POST
// /api/v2/device/{id}/routes, which replaces the enabled set.
func (c *tailscaleClient) SetApprovedRoutes(ctx context.Context, id string, routes []netip.Prefix) error {
	if id == "" {
		return fmt.Errorf("approving routes of device: empty ID: %w", ErrNotFound)
	}
	if err := c.api.Devices().SetSubnetRoutes(ctx, id, prefixStrings(routes)); err != nil {
		return fmt.Errorf("approving routes %v of device %s: %w", routes, id, c.wrap(err))
	}
	return nil
}
