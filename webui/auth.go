package webui

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"strings"

	"tailscale.com/client/tailscale/apitype"
)

// whoIser answers who owns a tailnet address; the WebUI's tsnet node is one.
type whoIser interface {
	WhoIs(ctx context.Context, remoteAddr string) (*apitype.WhoIsResponse, error)
}

// gate admits callers by --allowed-users. A nil whois (dev mode, localhost
// only) admits everyone.
type gate struct {
	whois   whoIser
	allowed []string
}

// check identifies the caller at remoteAddr and decides.
func (g *gate) check(ctx context.Context, remoteAddr string) Caller {
	if g.whois == nil {
		return Caller{Dev: true, Allowed: true}
	}
	w, err := g.whois.WhoIs(ctx, remoteAddr)
	if err != nil || w == nil || w.Node == nil {
		return Caller{Reason: fmt.Sprintf("your address %s is not a known node of this tailnet (%v)", remoteAddr, err), Required: g.allowed}
	}
	c := Caller{Node: w.Node.ComputedName, NodeID: string(w.Node.StableID), Tags: w.Node.Tags, Required: g.allowed}
	if c.Node == "" {
		c.Node = w.Node.Name
	}
	if w.UserProfile != nil {
		c.Login, c.Display = w.UserProfile.LoginName, w.UserProfile.DisplayName
	}
	c.Allowed, c.Reason = g.allows(c)
	return c
}

// allows matches login names case-insensitively, and "tag:x" entries
// against the caller node's tags (tagged nodes have no user of their own).
func (g *gate) allows(c Caller) (bool, string) {
	if len(g.allowed) == 0 {
		return true, ""
	}
	for _, a := range g.allowed {
		if strings.HasPrefix(a, "tag:") {
			for _, t := range c.Tags {
				if t == a {
					return true, ""
				}
			}
			continue
		}
		if c.Login != "" && strings.EqualFold(a, c.Login) {
			return true, ""
		}
	}
	who := c.Login
	if len(c.Tags) > 0 {
		who = fmt.Sprintf("%s (node %s, tags %s)", c.Login, c.Node, strings.Join(c.Tags, ","))
	}
	return false, fmt.Sprintf("%s is not in this WebUI's --allowed-users (%s)", who, strings.Join(g.allowed, ", "))
}

// middleware refuses callers the gate does not admit: 403 with a page that
// says why for browsers, JSON for the API.
func (g *gate) middleware(m *metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := g.check(r.Context(), r.RemoteAddr)
		if !c.Allowed {
			if m != nil {
				m.requests.WithLabelValues("forbidden").Inc()
			}
			if strings.HasPrefix(r.URL.Path, "/api/") || r.URL.Path == "/metrics" {
				writeJSON(w, http.StatusForbidden, map[string]any{"error": "forbidden: " + c.Reason, "caller": c})
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, forbiddenPage, html.EscapeString(c.Reason))
			return
		}
		if m != nil {
			m.requests.WithLabelValues("allowed").Inc()
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

type callerKey struct{}

const forbiddenPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>TSymbiote: access refused</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}code{background:#eee;padding:0 .2em}</style></head>
<body><h1>403: access refused</h1>
<p id="reason">%s</p>
<p>Ask whoever runs this TSymbiote WebUI to add your tailnet login to <code>--allowed-users</code>.</p>
</body></html>
`
