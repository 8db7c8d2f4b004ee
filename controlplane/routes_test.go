package controlplane_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/ipn"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

func prefixes(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestTailscaleRoutes replays the recorded route shapes of the Tailscale
// API v2 and checks the request bodies the client sends.
func TestTailscaleRoutes(t *testing.T) {
	var mu sync.Mutex
	var posted [][]byte
	mux := http.NewServeMux()
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if user, _, ok := r.BasicAuth(); !ok || user != fakeAPIKey {
				writeJSON(w, http.StatusUnauthorized, fixture(t, "error_unauthorized.json"))
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET /api/v2/device/{id}/routes", auth(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "nTESTJ32" {
			writeJSON(w, http.StatusNotFound, fixture(t, "error_not_found.json"))
			return
		}
		writeJSON(w, http.StatusOK, fixture(t, "routes_response.json"))
	}))
	mux.HandleFunc("POST /api/v2/device/{id}/routes", auth(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("routes POST Content-Type %q", ct)
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		posted = append(posted, b)
		mu.Unlock()
		writeJSON(w, http.StatusOK, fixture(t, "routes_response.json"))
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL)
		writeJSON(w, http.StatusNotFound, fixture(t, "error_not_found.json"))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	env := map[string]string{controlplane.EnvAPIURL: srv.URL, controlplane.EnvAPIKey: fakeAPIKey}
	c := newClient(t, func(k string) string { return env[k] })
	ra, err := controlplane.Routes(c)
	if err != nil {
		t.Fatal(err)
	}
	if !controlplane.IssuesCertificates(c) {
		t.Errorf("IssuesCertificates(tailscale) = false")
	}
	ctx := ctxT(t)

	adv, appr, err := ra.Routes(ctx, "nTESTJ32")
	if err != nil {
		t.Fatalf("Routes: %v", err)
	}
	if want := prefixes(t, "10.96.0.0/12", "192.168.1.0/24"); !reflect.DeepEqual(adv, want) {
		t.Errorf("advertised = %v, want %v", adv, want)
	}
	if want := prefixes(t, "10.96.0.0/12"); !reflect.DeepEqual(appr, want) {
		t.Errorf("approved = %v, want %v", appr, want)
	}
	if _, _, err := ra.Routes(ctx, "nMISSING"); !errors.Is(err, controlplane.ErrNotFound) {
		t.Errorf("Routes(missing) = %v, want ErrNotFound", err)
	}

	// Unsorted, duplicated input: the body is sorted as the fixture.
	if err := ra.SetApprovedRoutes(ctx, "nTESTJ32", prefixes(t, "10.96.0.0/12", "10.0.0.0/16")); err != nil {
		t.Fatalf("SetApprovedRoutes: %v", err)
	}
	if err := ra.SetApprovedRoutes(ctx, "nTESTJ32", nil); err != nil {
		t.Fatalf("SetApprovedRoutes(none): %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(posted) != 2 {
		t.Fatalf("%d POSTs, want 2", len(posted))
	}
	var got, want any
	_ = json.Unmarshal(posted[0], &got)
	_ = json.Unmarshal(fixture(t, "routes_request.json"), &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("POST body %s, want %s", posted[0], fixture(t, "routes_request.json"))
	}
	if string(posted[1]) != `{"routes":[]}` {
		t.Errorf("withdrawing POST body %s, want an empty list (null would not clear)", posted[1])
	}
}

// TestHeadscaleRoutes advertises routes from a real node on a real
// Headscale, approves one through the client, and withdraws it.
func TestHeadscaleRoutes(t *testing.T) {
	hs := headscaletest.Start(t, headscaletest.Options{Logf: t.Logf})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newClient(t, hs.Getenv)
	if controlplane.IssuesCertificates(c) {
		t.Errorf("IssuesCertificates(headscale) = true")
	}
	ra, err := controlplane.Routes(c)
	if err != nil {
		t.Fatal(err)
	}
	ts, st := hs.NewNode(t, headscaletest.NodeOptions{Hostname: "router", Tags: []string{headscaletest.TagTest}})
	id := string(st.Self.ID)
	lc, err := ts.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	want := prefixes(t, "10.96.0.0/16", "192.168.7.0/24")
	if _, err := lc.EditPrefs(ctx, &ipn.MaskedPrefs{AdvertiseRoutesSet: true, Prefs: ipn.Prefs{AdvertiseRoutes: want}}); err != nil {
		t.Fatalf("advertising: %v", err)
	}
	var adv, appr []netip.Prefix
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if adv, appr, err = ra.Routes(ctx, id); err != nil {
			t.Fatalf("Routes: %v", err)
		}
		if slices.Equal(adv, want) {
			t.Logf("advertised routes reached headscale after %v", time.Since(start).Round(time.Millisecond))
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("advertised = %v, want %v", adv, want)
		}
	}
	if len(appr) != 0 {
		t.Errorf("approved before approval = %v", appr)
	}
	if err := ra.SetApprovedRoutes(ctx, id, want[:1]); err != nil {
		t.Fatalf("SetApprovedRoutes: %v", err)
	}
	if _, appr, err = ra.Routes(ctx, id); err != nil || !slices.Equal(appr, want[:1]) {
		t.Fatalf("approved = %v, %v; want %v", appr, err, want[:1])
	}
	if err := ra.SetApprovedRoutes(ctx, id, nil); err != nil {
		t.Fatalf("withdrawing: %v", err)
	}
	if _, appr, err = ra.Routes(ctx, id); err != nil || len(appr) != 0 {
		t.Fatalf("approved after withdrawal = %v, %v; want none", appr, err)
	}
	if _, _, err := ra.Routes(ctx, "99999"); !errors.Is(err, controlplane.ErrNotFound) {
		t.Errorf("Routes(99999) = %v, want ErrNotFound", err)
	}
	if err := ra.SetApprovedRoutes(ctx, "nTEST", nil); err == nil || !strings.Contains(err.Error(), `"nTEST"`) {
		t.Errorf("SetApprovedRoutes(bad id) = %v, want an error naming it", err)
	}
}

func FuzzParsePrefixes(f *testing.F) {
	for _, s := range []string{"10.96.0.0/12", "10.96.0.1/12", " fd00::/8", "10.0.0.0", "", "300.1.1.1/8", "1.2.3.4/33"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := controlplane.ParsePrefixes("fuzz", strings.Split(s, ","))
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz") {
				t.Errorf("error %v does not name the input", err)
			}
			return
		}
		for _, p := range ps {
			if p != p.Masked() || !p.IsValid() {
				t.Errorf("%v not masked or invalid", p)
			}
		}
	})
}
