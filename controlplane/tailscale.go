package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
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
		HTTP: &http.Client{
			Timeout:   time.Minute,
			Transport: apiErrorTransport{http.DefaultTransport},
		},
	}
	if cfg.APIURL != "" {
		if err := checkURL(EnvAPIURL, cfg.APIURL, cfg.secrets()...); err != nil {
			return nil, err
		}
		u, _ := url.Parse(strings.TrimSuffix(cfg.APIURL, "/"))
		// The credential is the API key or token; a password in the URL
		// would only end up in error messages.
		u.User = nil
		api.BaseURL = u
	}
	switch {
	case cfg.OAuthClientID != "" && !cfg.OAuthClientSecret.IsZero():
		api.Auth = &oauthAuth{cfg: clientcredentials.Config{
			ClientID:     cfg.OAuthClientID,
			ClientSecret: cfg.OAuthClientSecret.Reveal(),
			Scopes:       cfg.Scopes,
		}}
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

// oauthAuth is tsapi.OAuth, except that the token request runs under the
// API request's context and transport. tsapi.OAuth fetches tokens with
// context.Background and http.DefaultClient, so a token endpoint that
// accepts the connection and never answers hangs the caller forever,
// whatever its deadline.
type oauthAuth struct {
	cfg clientcredentials.Config

	mu  sync.Mutex
	tok *oauth2.Token // last token; reused while Valid
}

// HTTPClient implements tsapi.Auth.
func (a *oauthAuth) HTTPClient(orig *http.Client, baseURL string) *http.Client {
	a.cfg.TokenURL = baseURL + "/api/v2/oauth/token"
	base := orig.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	return &http.Client{
		Transport:     &oauthTransport{a: a, base: base, tokenClient: &http.Client{Transport: base}},
		CheckRedirect: orig.CheckRedirect,
		Jar:           orig.Jar,
		Timeout:       orig.Timeout,
	}
}

func (a *oauthAuth) token(ctx context.Context, hc *http.Client) (*oauth2.Token, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tok.Valid() {
		return a.tok, nil
	}
	tok, err := a.cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, hc))
	if err != nil {
		return nil, err
	}
	a.tok = tok
	return tok, nil
}

// forget drops tok, which the API refused, so that the next call gets a
// new one.
func (a *oauthAuth) forget(tok *oauth2.Token) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tok == tok {
		a.tok = nil
	}
}

type oauthTransport struct {
	a           *oauthAuth
	base        http.RoundTripper
	tokenClient *http.Client
}

func (t *oauthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.a.token(req.Context(), t.tokenClient)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	req = req.Clone(req.Context())
	tok.SetAuthHeader(req)
	res, err := t.base.RoundTrip(req)
	if err == nil && res.StatusCode == http.StatusUnauthorized {
		t.a.forget(tok)
	}
	return res, err
}

// apiErrorTransport gives every error response a body in the API's JSON
// error shape. tsapi decodes error bodies as JSON and, when a proxy or load
// balancer answers with text or nothing, returns a JSON syntax error that
// hides the status, so a 401, 404 or 412 would not map onto
// ErrUnauthorized, ErrNotFound or ErrPolicyConflict.
type apiErrorTransport struct{ base http.RoundTripper }

func (t apiErrorTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.base.RoundTrip(req)
	if err != nil || res.StatusCode < 400 {
		return res, err
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading %s response: %w", res.Status, err)
	}
	var apiErr tsapi.APIError
	if json.Unmarshal(data, &apiErr) != nil {
		msg := strings.Join(strings.Fields(string(data)), " ")
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		if msg == "" {
			msg = http.StatusText(res.StatusCode)
		}
		data, _ = json.Marshal(tsapi.APIError{Message: msg})
		res.Header.Set("Content-Type", "application/json")
	}
	res.Body = io.NopCloser(bytes.NewReader(data))
	res.ContentLength = int64(len(data))
	res.Header.Del("Content-Length")
	return res, nil
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
			return fmt.Errorf("tailscale API at %s rejected %s (status %d: %s): %w", c.base, c.credVars, apiErr.Status, apiErr.Message, ErrUnauthorized)
		case http.StatusNotFound:
			return fmt.Errorf("tailscale API at %s: status %d: %s: %w", c.base, apiErr.Status, apiErr.Message, ErrNotFound)
		case http.StatusPreconditionFailed:
			return fmt.Errorf("tailscale API at %s: status %d: %s: %w", c.base, apiErr.Status, apiErr.Message, ErrPolicyConflict)
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
