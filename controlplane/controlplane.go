// Package controlplane is the one client every TSymbiote daemon uses to talk to
// the tailnet's control plane: list devices, mint auth keys, delete devices and
// read or compare-and-swap the policy. Two backends implement [Client]: the
// Tailscale API v2 (OAuth client or API key) and Headscale's REST API. Which one
// a daemon uses is decided by [ConfigFromEnv], the same way in every daemon.
package controlplane

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"time"
)

// Client is a tailnet control plane.
//
// Device IDs are the stable node IDs that a node's own LocalAPI reports
// (ipnstate.PeerStatus.ID), so a daemon can delete the node it runs without a
// lookup by name.
type Client interface {
	// Backend names the implementation ("tailscale" or "headscale").
	Backend() string

	// ControlURL is the URL nodes log in to; empty means Tailscale's default.
	ControlURL() string

	// Verify makes one cheap authenticated call, so that a daemon fails at
	// start-up with a clear error instead of at its first pod or request.
	Verify(ctx context.Context) error

	// ListDevices lists the tailnet's devices, filtered by opts.
	ListDevices(ctx context.Context, opts ListOptions) ([]Device, error)

	// CreateAuthKey mints an auth key. The returned key's Key is a secret.
	CreateAuthKey(ctx context.Context, req AuthKeyRequest) (*AuthKey, error)

	// DeleteDevice removes a device. It returns an error wrapping ErrNotFound
	// when there is no such device, so callers that want idempotence can
	// ignore exactly that case.
	DeleteDevice(ctx context.Context, id string) error

	// GetPolicy returns the tailnet policy (HuJSON) and a version token.
	GetPolicy(ctx context.Context) (*Policy, error)

	// SetPolicy replaces the policy if the current policy's version token is
	// still version, and returns the new policy and its token. If the policy
	// changed since version was read it returns an error wrapping
	// ErrPolicyConflict and changes nothing. An empty version writes
	// unconditionally.
	SetPolicy(ctx context.Context, body string, version string) (*Policy, error)
}

var (
	// ErrNotFound reports that the named device or object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrPolicyConflict reports a SetPolicy whose version token is stale.
	ErrPolicyConflict = errors.New("policy changed since it was read")
	// ErrUnauthorized reports credentials the control plane rejected.
	ErrUnauthorized = errors.New("credentials rejected")
)

// Device is one node of the tailnet as the control plane sees it.
type Device struct {
	ID            string       // stable node ID
	Name          string       // name in the tailnet (MagicDNS label or given name)
	Hostname      string       // the OS hostname the node reported
	User          string       // owning user; empty for tagged devices
	Tags          []string     // ACL tags, sorted
	Addresses     []netip.Addr // tailnet addresses, IPv4 first
	Online        bool         // connected to the control plane now
	OS            string       // e.g. "linux"; empty when the backend does not say
	ClientVersion string       // tailscale version; empty when the backend does not say
	LastSeen      time.Time    // zero if unknown
	Ephemeral     bool
}

// HasTag reports whether d carries tag.
func (d *Device) HasTag(tag string) bool { return slices.Contains(d.Tags, tag) }

// ListOptions filters ListDevices.
type ListOptions struct {
	// Tag, if set, keeps only devices that carry it.
	Tag string
}

func (o ListOptions) keep(d *Device) bool {
	return o.Tag == "" || d.HasTag(o.Tag)
}

// AuthKeyRequest describes an auth key to mint.
type AuthKeyRequest struct {
	Tags          []string      // ACL tags the key gives its nodes; at least one for a tagged node
	Ephemeral     bool          // nodes are removed soon after they go offline
	Reusable      bool          // the key can register more than one node
	Preauthorized bool          // nodes need no admin approval (Headscale keys always are)
	Expiry        time.Duration // how long the key can be used; 0 means the backend's default
	Description   string        // shown in the admin console (Tailscale only)
}

// AuthKey is a minted auth key.
type AuthKey struct {
	ID      string
	Key     Secret
	Expires time.Time
	Tags    []string
}

// Policy is the tailnet policy file and the token that identifies its version.
type Policy struct {
	Body    string // HuJSON
	Version string // opaque; pass to SetPolicy
}
