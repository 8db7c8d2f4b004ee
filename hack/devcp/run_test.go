package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestControlPlaneInEnv(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{nil, ""},
		{map[string]string{"TS_AUTHKEY": "k"}, ""},
		{map[string]string{"HEADSCALE_URL": "http://hs"}, "HEADSCALE_URL"},
		{map[string]string{"TS_OAUTH_CLIENT_ID": "id"}, "TS_OAUTH_CLIENT_ID"},
		{map[string]string{"TS_API_KEY": "k"}, "TS_API_KEY"},
		{map[string]string{"TS_CONTROL_URL": "http://c"}, "TS_CONTROL_URL"},
		{map[string]string{"HEADSCALE_URL": "  "}, ""},
	} {
		if got := controlPlaneInEnv(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("%v: got %q, want %q", tc.env, got, tc.want)
		}
	}
}

func TestWithSocket(t *testing.T) {
	got := withSocket([]string{"bin/tsymbiote", "adapter", "--socket", "{socket}", "--x={socket}"}, "/s.sock")
	want := []string{"bin/tsymbiote", "adapter", "--socket", "/s.sock", "--x=/s.sock"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestReadPublished reuses a published control plane only while it
// answers.
func TestReadPublished(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "env")
	c := local{url: srv.URL, apiKey: "secret"}
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if _, ok := readPublished(ctx, path); ok {
		t.Error("no file: reused")
	}
	write("HEADSCALE_URL=" + srv.URL + "\n")
	if _, ok := readPublished(ctx, path); ok {
		t.Error("no API key: reused")
	}
	write(c.env()[0] + "\n" + c.env()[1] + "\n")
	if got, ok := readPublished(ctx, path); !ok || got != c {
		t.Errorf("published %+v: got %+v %v", c, got, ok)
	}
	srv.Close()
	if _, ok := readPublished(ctx, path); ok {
		t.Error("server gone: reused")
	}
}
