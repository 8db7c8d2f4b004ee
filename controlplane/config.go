package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"tailscale.com/types/logger"
)

// Environment variables read by ConfigFromEnv. They are the same in every
// TSymbiote daemon.
const (
	EnvOAuthClientID     = "TS_OAUTH_CLIENT_ID"
	EnvOAuthClientSecret = "TS_OAUTH_CLIENT_SECRET"
	EnvAPIKey            = "TS_API_KEY"
	EnvTailnet           = "TS_TAILNET"
	EnvAPIURL            = "TS_API_URL"
	EnvControlURL        = "TS_CONTROL_URL"
	EnvHeadscaleURL      = "HEADSCALE_URL"
	EnvHeadscaleAPIKey   = "HEADSCALE_API_KEY"
)

// Backend names.
const (
	BackendTailscale = "tailscale"
	BackendHeadscale = "headscale"
)

// Config selects and configures a control-plane backend.
type Config struct {
	// ControlURL is where nodes log in (TS_CONTROL_URL). Empty means
	// Tailscale's default for the Tailscale backend, and HeadscaleURL for
	// the Headscale backend.
	ControlURL string

	// Tailscale API v2: either an OAuth client or an API key.
	OAuthClientID     string
	OAuthClientSecret Secret
	// Scopes requested for OAuth tokens; empty asks for the client's own.
	Scopes  []string
	APIKey  Secret
	Tailnet string // "-" (the credential's own tailnet) when empty
	APIURL  string // Tailscale API base URL; empty is the public API

	// Headscale.
	HeadscaleURL    string
	HeadscaleAPIKey Secret
}

// ConfigFromEnv reads the control-plane configuration from the environment
// through getenv (os.Getenv in a daemon). It fails, naming the variables, when
// no backend or both are configured, or when a backend is half configured.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	c := Config{
		ControlURL:        get(EnvControlURL),
		OAuthClientID:     get(EnvOAuthClientID),
		OAuthClientSecret: Secret(get(EnvOAuthClientSecret)),
		APIKey:            Secret(get(EnvAPIKey)),
		Tailnet:           get(EnvTailnet),
		APIURL:            get(EnvAPIURL),
		HeadscaleURL:      get(EnvHeadscaleURL),
		HeadscaleAPIKey:   Secret(get(EnvHeadscaleAPIKey)),
	}
	return c, c.Validate()
}

// Backend reports which backend c selects, or "" if none.
func (c *Config) Backend() string {
	switch {
	case c.HeadscaleURL != "" || !c.HeadscaleAPIKey.IsZero():
		return BackendHeadscale
	case c.OAuthClientID != "" || !c.OAuthClientSecret.IsZero() || !c.APIKey.IsZero():
		return BackendTailscale
	}
	return ""
}

// Validate checks that exactly one backend is fully configured and that its
// URLs parse. Errors name the environment variables to fix, never values.
func (c *Config) Validate() error {
	ts := c.OAuthClientID != "" || !c.OAuthClientSecret.IsZero() || !c.APIKey.IsZero()
	hs := c.HeadscaleURL != "" || !c.HeadscaleAPIKey.IsZero()
	switch {
	case ts && hs:
		return fmt.Errorf("control plane: both Tailscale (%s/%s or %s) and Headscale (%s/%s) are configured; set only one",
			EnvOAuthClientID, EnvOAuthClientSecret, EnvAPIKey, EnvHeadscaleURL, EnvHeadscaleAPIKey)
	case !ts && !hs:
		return fmt.Errorf("control plane: no credentials; set %s and %s (or %s) for Tailscale, or %s and %s for Headscale",
			EnvOAuthClientID, EnvOAuthClientSecret, EnvAPIKey, EnvHeadscaleURL, EnvHeadscaleAPIKey)
	case hs:
		if c.HeadscaleURL == "" {
			return fmt.Errorf("control plane: %s is set but %s is empty", EnvHeadscaleAPIKey, EnvHeadscaleURL)
		}
		if c.HeadscaleAPIKey.IsZero() {
			return fmt.Errorf("control plane: %s is set but %s is empty", EnvHeadscaleURL, EnvHeadscaleAPIKey)
		}
		if err := checkURL(EnvHeadscaleURL, c.HeadscaleURL, c.secrets()...); err != nil {
			return err
		}
	default:
		oauth := c.OAuthClientID != "" || !c.OAuthClientSecret.IsZero()
		if oauth && !c.APIKey.IsZero() {
			return fmt.Errorf("control plane: both an OAuth client (%s/%s) and %s are set; set only one",
				EnvOAuthClientID, EnvOAuthClientSecret, EnvAPIKey)
		}
		if oauth && c.OAuthClientID == "" {
			return fmt.Errorf("control plane: %s is set but %s is empty", EnvOAuthClientSecret, EnvOAuthClientID)
		}
		if oauth && c.OAuthClientSecret.IsZero() {
			return fmt.Errorf("control plane: %s is set but %s is empty", EnvOAuthClientID, EnvOAuthClientSecret)
		}
		if c.APIURL != "" {
			if err := checkURL(EnvAPIURL, c.APIURL, c.secrets()...); err != nil {
				return err
			}
		}
	}
	if c.ControlURL != "" {
		if err := checkURL(EnvControlURL, c.ControlURL, c.secrets()...); err != nil {
			return err
		}
	}
	return nil
}

// secrets lists c's credentials, so that errors can avoid quoting them.
func (c *Config) secrets() []Secret {
	return []Secret{c.OAuthClientSecret, c.APIKey, c.HeadscaleAPIKey}
}

// checkURL checks that raw, the value of the variable name, is an http(s)
// URL with a host. Its error quotes raw (minus any password) to help fix a
// typo, unless raw holds one of secrets or looks like a key: a credential
// pasted into the wrong variable must not end up in a log.
func checkURL(name, raw string, secrets ...Secret) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		got := fmt.Sprintf("%q", redactURL(raw))
		if looksSecret(raw, secrets) {
			got = "a value that looks like a credential (are two variables swapped?)"
		}
		return fmt.Errorf("control plane: %s must be an http or https URL with a host, got %s", name, got)
	}
	return nil
}

func looksSecret(raw string, secrets []Secret) bool {
	low := strings.ToLower(raw)
	if strings.Contains(low, "tskey-") || strings.Contains(low, "hskey-") {
		return true
	}
	for _, s := range secrets {
		if !s.IsZero() && strings.Contains(raw, s.Reveal()) {
			return true
		}
	}
	return false
}

// redactURL drops any userinfo so that a URL with a password in it can be
// quoted in an error.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if strings.Contains(raw, "@") {
			return "<unparseable URL>"
		}
		return raw
	}
	if u.User == nil {
		return raw
	}
	u.User = url.User("redacted")
	return u.String()
}

// printedConfig is a Config without methods, so that printing it cannot
// recurse into Config's own Format.
type printedConfig Config

// printable is c with any password in its URLs replaced; its Secret fields
// print as placeholders by themselves.
func (c Config) printable() printedConfig {
	c.ControlURL = redactURL(c.ControlURL)
	c.APIURL = redactURL(c.APIURL)
	c.HeadscaleURL = redactURL(c.HeadscaleURL)
	return printedConfig(c)
}

// Format implements fmt.Formatter. A daemon that logs its configuration
// must not log a password someone put in HEADSCALE_URL (a reverse proxy's
// basic auth, say) any more than its API key.
func (c Config) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), c.printable())
}

// LogValue implements slog.LogValuer, with the same redaction as Format.
func (c Config) LogValue() slog.Value { return slog.AnyValue(c.printable()) }

// MarshalJSON keeps URL passwords out of JSON dumps; secrets are already
// kept out by Secret.MarshalText.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.printable()) }

// New returns the Client that cfg selects.
func New(logf logger.Logf, cfg Config) (Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch cfg.Backend() {
	case BackendHeadscale:
		return NewHeadscale(logf, cfg)
	case BackendTailscale:
		return NewTailscale(logf, cfg)
	}
	return nil, errors.New("control plane: no backend configured")
}

// EffectiveControlURL is the URL nodes log in to under cfg.
func (c *Config) EffectiveControlURL() string {
	if c.ControlURL != "" {
		return c.ControlURL
	}
	if c.Backend() == BackendHeadscale {
		return c.HeadscaleURL
	}
	return ""
}
