package webui

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzCSRF feeds the cross-site check arbitrary headers: it never panics,
// and whatever it lets through is same-origin by construction (an http(s)
// Origin naming the Host, the CSRF header, no other Sec-Fetch-Site).
func FuzzCSRF(f *testing.F) {
	f.Add("POST", "tsymbiote-webui", "http://tsymbiote-webui", "", "1")
	f.Add("POST", "127.0.0.1:3621", "http://127.0.0.1:3621", "same-origin", "1")
	f.Add("POST", "x", "null", "cross-site", "1")
	f.Add("DELETE", "[::1]:80", "http://[::1]", "", "1")
	f.Add("PUT", "A:443", "https://a", "none", "")
	f.Fuzz(func(t *testing.T, method, host, origin, sfs, hdr string) {
		if method == "" || strings.ContainsAny(method, " \t\r\n()<>@,;:\\\"/[]?={}") {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "http://x/", nil)
		r.Method, r.Host = method, host
		r.Header.Set("Origin", origin)
		r.Header.Set("Sec-Fetch-Site", sfs)
		r.Header.Set(CSRFHeader, hdr)
		if err := checkCSRF(r); err != nil || method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions {
			return
		}
		o, err := url.Parse(r.Header.Get("Origin"))
		if err != nil || (o.Scheme != "http" && o.Scheme != "https") || r.Header.Get(CSRFHeader) != "1" ||
			(r.Header.Get("Sec-Fetch-Site") != "" && r.Header.Get("Sec-Fetch-Site") != "same-origin") || !sameHost(o.Scheme, o.Host, host) {
			t.Fatalf("let through: %s Host %q Origin %q Sec-Fetch-Site %q header %q", method, host, origin, sfs, hdr)
		}
	})
}

// FuzzAccessCreate feeds the create endpoint's body parser and checks
// arbitrary bodies: no panic, and what passes is within the target's
// limits.
func FuzzAccessCreate(f *testing.F) {
	f.Add(`{"target":"prod","seconds":600,"reason":"x"}`)
	f.Add(`{"target":"prod","seconds":-1}`)
	f.Add(`{"target":"prod","seconds":1e30}`)
	f.Add(`{"target":"prod","requester":"bob@example.com","seconds":60}`)
	f.Add(`[]`)
	target := AccessTarget{Name: "prod", Group: "group:prod", MaxSeconds: 3600, ReasonRequired: true}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "http://x/api/access/requests", strings.NewReader(body))
		var in AccessRequestCreate
		if decodeBody(r, &in) != nil || ValidateAccessCreate(target, in) != nil {
			return
		}
		if in.Seconds <= 0 || in.Seconds > target.MaxSeconds || strings.TrimSpace(in.Reason) == "" || len(in.Reason) > 1024 {
			t.Fatalf("accepted %q as %+v", body, in)
		}
	})
}
