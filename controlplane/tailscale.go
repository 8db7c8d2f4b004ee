package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
	tsapi "tailscale.com/client/tailscale/v2"
	"tailscale.com/types/logger"
)

// tailscaleClient speaks the Tailscale API v2 through
// tailscale.com/client/tailscale/v2, authenticated by an OAuth client or an
// API key. Policy compare-and-swap uses the ACL endpoint's ETag and If-Match.
type tailscaleClient struct {
	logf       logger.Logf
	api        *tsapi.Client
	base       string // for errors
	credVars   string // the variables holding the credential, for errors
	controlURL string
}

// NewTailscale returns a Client for the Tailscale API v2.
func NewTailscale(logf logger.Logf, cfg Config) (Client, error) {
	c := &tailscaleClient{logf: logf, controlURL: cfg.ControlURL}
	api := &tsapi.Client{
		Tailnet:   cfg.Tailnet,
		UserAgent: "tsymbiote",
		HTTP:      &http.Client{Timeout: time.Minute},
	}
	if cfg.APIURL != "" {
		if err := checkURL(EnvAPIURL, cfg.APIURL); err != nil {
			return nil, err
		}
		u, _ := url.Parse(strings.TrimSuffix(cfg.APIURL, "/"))
		api.BaseURL = u
	}
	switch {
	case cfg.OAuthClientID != "" && !cfg.OAuthClientSecret.IsZero():
		api.Auth = &tsapi.OAuth{
			ClientID:     cfg.OAuthClientID,
			ClientSecret: cfg.OAuthClientSecret.Reveal(),
			Scopes:       cfg.Scopes,
		}
		c.credVars = EnvOAuthClientID + "/" + EnvOAuthClientSecret
	case !cfg.APIKey.IsZero():
		api.APIKey = cfg.APIKey.Reveal()
		c.credVars = EnvAPIKey
	default:
		return nil, fmt.Errorf("control plane: tailscale needs %s and %s, or %s", EnvOAuthClientID, EnvOAuthClientSecret, EnvAPIKey)
	}
	c.api = api
	c.base = "https://api.tailscale.com"
	if api.BaseURL != nil {
		c.base = api.BaseURL.String()
	}
	return c, nil
}

func (c *tailscaleClient) Backend() string    { return BackendTailscale }
func (c *tailscaleClient) ControlURL() string { return c.controlURL }

func (c *tailscaleClient) Verify(ctx context.Context) error {
	_, err := c.ListDevices(ctx, ListOptions{})
	return err
}

// wrap turns a client error into one that names the server and, for a
// rejected credential, the variables that hold it, and maps statuses onto
// the package's sentinel errors.
func (c *tailscaleClient) wrap(err error) error {
	if err == nil {
		return nil
	}
	var apiErr tsapi.APIError
	var retrieveErr *oauth2.RetrieveError
	switch {
	case errors.As(err, &retrieveErr):
		status := 0
		if retrieveErr.Response != nil {
			status = retrieveErr.Response.StatusCode
		}
		if status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusBadRequest {
			return fmt.Errorf("tailscale API at %s rejected %s (OAuth token exchange, status %d): %w", c.base, c.credVars, status, ErrUnauthorized)
		}
		return fmt.Errorf("tailscale API at %s: OAuth token exchange failed (status %d)", c.base, status)
	case errors.As(err, &apiErr):
		switch apiErr.Status {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("tailscale API at %s rejected %s: %s: %w", c.base, c.credVars, apiErr.Message, ErrUnauthorized)
		case http.StatusNotFound:
			return fmt.Errorf("tailscale API at %s: %s: %w", c.base, apiErr.Message, ErrNotFound)
		case http.StatusPreconditionFailed:
			return fmt.Errorf("tailscale API at %s: %s: %w", c.base, apiErr.Message, ErrPolicyConflict)
		}
		return fmt.Errorf("tailscale API at %s: %w", c.base, apiErr)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return fmt.Errorf("tailscale API at %s (%s) unreachable: %w", c.base, EnvAPIURL, uerr.Err)
	}
	return fmt.Errorf("tailscale API at %s: %w", c.base, err)
}

func (c *tailscaleClient) ListDevices(ctx context.Context, opts ListOptions) ([]Device, error) {
	devs, err := c.api.Devices().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing devices: %w", c.wrap(err))
	}
	out := make([]Device, 0, len(devs))
	for _, td := range devs {
		d := Device{
			ID:            td.NodeID,
			Name:          strings.SplitN(td.Name, ".", 2)[0],
			Hostname:      td.Hostname,
			Tags:          slices.Sorted(slices.Values(td.Tags)),
			Addresses:     parseAddrs(td.Addresses),
			Online:        td.ConnectedToControl,
			OS:            td.OS,
			ClientVersion: td.ClientVersion,
			Ephemeral:     td.IsEphemeral,
		}
		if d.ID == "" {
			d.ID = td.ID
		}
		if len(td.Tags) == 0 {
			d.User = td.User
		}
		if td.LastSeen != nil {
			d.LastSeen = td.LastSeen.Time
		}
		if opts.keep(&d) {
			out = append(out, d)
		}
	}
	return out, nil
}

func (c *tailscaleClient) CreateAuthKey(ctx context.Context, req AuthKeyRequest) (*AuthKey, error) {
	if err := validateTags(req.Tags); err != nil {
		return nil, err
	}
	var ckr tsapi.CreateKeyRequest
	ckr.Capabilities.Devices.Create.Reusable = req.Reusable
	ckr.Capabilities.Devices.Create.Ephemeral = req.Ephemeral
	ckr.Capabilities.Devices.Create.Preauthorized = req.Preauthorized
	ckr.Capabilities.Devices.Create.Tags = req.Tags
	ckr.ExpirySeconds = int64(req.Expiry / time.Second)
	ckr.Description = req.Description
	k, err := c.api.Keys().CreateAuthKey(ctx, ckr)
	if err != nil {
		return nil, fmt.Errorf("creating auth key: %w", c.wrap(err))
	}
	return &AuthKey{ID: k.ID, Key: Secret(k.Key), Expires: k.Expires, Tags: k.Capabilities.Devices.Create.Tags}, nil
}

func (c *tailscaleClient) DeleteDevice(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("deleting device: empty ID: %w", ErrNotFound)
	}
	if err := c.api.Devices().Delete(ctx, id); err != nil {
		return fmt.Errorf("deleting device %s: %w", id, c.wrap(err))
	}
	return nil
}

func (c *tailscaleClient) GetPolicy(ctx context.Context) (*Policy, error) {
	raw, err := c.api.PolicyFile().Raw(ctx)
	if err != nil {
		return nil, fmt.Errorf("getting policy: %w", c.wrap(err))
	}
	return &Policy{Body: raw.HuJSON, Version: raw.ETag}, nil
}

func (c *tailscaleClient) SetPolicy(ctx context.Context, body, version string) (*Policy, error) {
	if err := c.api.PolicyFile().Set(ctx, body, version); err != nil {
		return nil, fmt.Errorf("setting policy: %w", c.wrap(err))
	}
	return c.GetPolicy(ctx)
}
