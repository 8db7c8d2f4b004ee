package webui

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestCSRF is the table of requests the middleware lets through or
// refuses, and what it says when it refuses.
func TestCSRF(t *testing.T) {
	const host = "tsymbiote-webui"
	good := map[string]string{"Origin": "http://" + host, CSRFHeader: "1"}
	with := func(kv ...string) map[string]string {
		h := map[string]string{}
		for k, v := range good {
			h[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(h, kv[i])
			} else {
				h[kv[i]] = kv[i+1]
			}
		}
		return h
	}
	for _, tc := range []struct {
		name    string
		method  string
		host    string // Host header; host when empty
		headers map[string]string
		wantErr string // substring; empty means let through
	}{
		{name: "good (CLI: no Sec-Fetch-Site)", method: "POST", headers: good},
		{name: "good (browser)", method: "POST", headers: with("Sec-Fetch-Site", "same-origin")},
		{name: "good DELETE", method: "DELETE", headers: good},
		{name: "good, explicit default port in Host", method: "POST", host: host + ":80", headers: good},
		{name: "good, other port on both", method: "POST", host: "127.0.0.1:3621", headers: with("Origin", "http://127.0.0.1:3621")},
		{name: "GET needs nothing", method: "GET", headers: nil},
		{name: "HEAD needs nothing", method: "HEAD", headers: nil},
		{name: "missing Origin", method: "POST", headers: with("Origin", ""), wantErr: "no Origin header"},
		{name: "other origin", method: "POST", headers: with("Origin", "http://evil.example"), wantErr: `origin "http://evil.example" is not this WebUI`},
		{name: "other port", method: "POST", host: "127.0.0.1:3621", headers: with("Origin", "http://127.0.0.1:3622"), wantErr: "is not this WebUI"},
		{name: "null origin", method: "POST", headers: with("Origin", "null"), wantErr: "not an http(s) origin"},
		{name: "Sec-Fetch-Site cross-site", method: "POST", headers: with("Sec-Fetch-Site", "cross-site"), wantErr: `Sec-Fetch-Site is "cross-site"`},
		{name: "Sec-Fetch-Site same-site", method: "POST", headers: with("Sec-Fetch-Site", "same-site"), wantErr: `Sec-Fetch-Site is "same-site"`},
		{name: "Sec-Fetch-Site none", method: "POST", headers: with("Sec-Fetch-Site", "none"), wantErr: `Sec-Fetch-Site is "none"`},
		{name: "cross-site even with the header", method: "PUT", headers: with("Sec-Fetch-Site", "cross-site", CSRFHeader, "1"), wantErr: "Sec-Fetch-Site"},
		{name: "no custom header (a form post)", method: "POST", headers: with(CSRFHeader, ""), wantErr: "no " + CSRFHeader},
		{name: "custom header with another value", method: "POST", headers: with(CSRFHeader, "yes"), wantErr: "no " + CSRFHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reached := false
			h := csrfProtect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true }))
			req := httptest.NewRequest(tc.method, "http://"+host+"/api/access/requests/x/approve", nil)
			if tc.host != "" {
				req.Host = tc.host
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if tc.wantErr == "" {
				if !reached || rec.Code != http.StatusOK {
					t.Fatalf("refused: %d %s", rec.Code, rec.Body)
				}
				return
			}
			if reached {
				t.Fatal("reached the handler")
			}
			var e struct{ Error string }
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if rec.Code != http.StatusForbidden || !strings.Contains(e.Error, tc.wantErr) || !strings.HasPrefix(e.Error, "cross-site request refused: ") {
				t.Fatalf("got %d %s, want 403 with %q", rec.Code, rec.Body, tc.wantErr)
			}
		})
	}
}

// TestCSRFServer checks that the WebUI's own routes are behind it: a
// fan-out POSTed without the header is refused, and with it accepted.
func TestCSRFServer(t *testing.T) {
	_, hs := newTestServer(t, nil, nil)
	res, err := http.Post(hs.URL+"/api/fanouts", "application/json", strings.NewReader(`{"kind":"dns","dnsName":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "cross-site request refused") {
		t.Fatalf("no headers: %d %s", res.StatusCode, b)
	}
	res, err = post(hs.URL+"/api/fanouts", "application/json", strings.NewReader(`{"kind":"dns","dnsName":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode == http.StatusForbidden {
		t.Fatalf("with headers: %d", res.StatusCode)
	}
}

// post is http.Post as the WebUI's own page makes it: with an Origin
// naming the server and the CSRF header.
func post(u, contentType string, body io.Reader) (*http.Response, error) {
	return sameOriginRequest(http.DefaultClient, http.MethodPost, u, contentType, body)
}

func sameOriginRequest(c *http.Client, method, u, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	pu, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Origin", pu.Scheme+"://"+pu.Host)
	req.Header.Set(CSRFHeader, "1")
	return c.Do(req)
}
