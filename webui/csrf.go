package webui

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// CSRFHeader is the header every state-changing request to the WebUI must
// carry, with the value "1". A browser sends it only from script on the
// WebUI's own page: an HTML form cannot set a header, and a fetch from
// another origin that sets one needs a CORS preflight the WebUI never
// answers. The tsymbiote CLI sends it too.
const CSRFHeader = "X-Tsymbiote-Csrf"

// csrfProtect refuses state-changing requests (every method but GET, HEAD
// and OPTIONS) that a page on another origin could have made through the
// caller's browser. WhoIs names the caller's machine, not the page that
// sent the request, so without this any site an approver visits could
// approve through their browser.
//
// Three checks, all required, in the order a browser's request fails them:
//   - Sec-Fetch-Site, when present, is "same-origin". Browsers send it only
//     to localhost and HTTPS origins, so the WebUI on the tailnet
//     (http://tsymbiote-webui) usually gets none and relies on the rest.
//   - Origin is present and names the Host the request was sent to.
//     Browsers send Origin with every POST, PUT and DELETE; non-browser
//     clients (the CLI) set it to the URL they call.
//   - CSRFHeader is "1".
//
// It is safe for concurrent use; it keeps no state.
func csrfProtect(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkCSRF(r); err != nil {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "cross-site request refused: " + err.Error()})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkCSRF says why r may not change anything, or nil.
func checkCSRF(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if sfs := r.Header.Get("Sec-Fetch-Site"); sfs != "" && sfs != "same-origin" {
		return fmt.Errorf("Sec-Fetch-Site is %q, not same-origin", sfs)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return fmt.Errorf("no Origin header (a %s must name the page it comes from)", r.Method)
	}
	o, err := url.Parse(origin)
	if err != nil || (o.Scheme != "http" && o.Scheme != "https") || o.Host == "" {
		return fmt.Errorf("origin %q is not an http(s) origin", origin)
	}
	if want := r.Host; !sameHost(o.Scheme, o.Host, want) {
		return fmt.Errorf("origin %q is not this WebUI (Host %q)", origin, want)
	}
	if r.Header.Get(CSRFHeader) != "1" {
		return fmt.Errorf("no %s: 1 header", CSRFHeader)
	}
	return nil
}

// sameHost compares an Origin's host with a Host header, case-insensitively
// and with the scheme's default port made explicit on both sides (a browser
// leaves it out of both, curl may not).
func sameHost(scheme, originHost, host string) bool {
	def := "80"
	if scheme == "https" {
		def = "443"
	}
	norm := func(h string) string {
		h = strings.ToLower(h)
		if _, _, err := net.SplitHostPort(h); err != nil {
			return net.JoinHostPort(strings.Trim(h, "[]"), def)
		}
		return h
	}
	return host != "" && norm(originHost) == norm(host)
}
