package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHandlers(t *testing.T) {
	dir := t.TempDir()
	content := []byte("hello tailnet\n")
	if err := os.WriteFile(filepath.Join(dir, "f.txt"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	srv := httptest.NewServer(newMux(dir))
	defer srv.Close()
	// A port nothing listens on, for a fetch that fails.
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	pattern := make([]byte, 300)
	for i := range pattern {
		pattern[i] = byte(i)
	}
	patternSum := sha256.Sum256(pattern)

	tests := []struct {
		name, method, path, body string
		wantCode                 int
		check                    func(t *testing.T, body []byte)
	}{
		{name: "file", method: "GET", path: "/files/f.txt", wantCode: 200, check: equals(string(content))},
		{name: "sha256", method: "GET", path: "/sha256/f.txt", wantCode: 200, check: equals(hex.EncodeToString(sum[:]) + "\n")},
		{name: "sha256 missing", method: "GET", path: "/sha256/nope", wantCode: 404},
		{name: "sha256 escape", method: "GET", path: "/sha256/..%2f..%2fetc%2fpasswd", wantCode: 404},
		{name: "bytes", method: "GET", path: "/bytes/300", wantCode: 200, check: func(t *testing.T, b []byte) {
			if len(b) != 300 || b[255] != 255 || b[256] != 0 {
				t.Errorf("got %d bytes, pattern broken", len(b))
			}
		}},
		{name: "bytes bad", method: "GET", path: "/bytes/-1", wantCode: 400},
		{name: "echo", method: "POST", path: "/echo?x=1", body: "ping", wantCode: 200, check: func(t *testing.T, b []byte) {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if m["method"] != "POST" || m["path"] != "/echo?x=1" || m["body"] != "ping" {
				t.Errorf("echo %v", m)
			}
		}},
		{name: "healthz", method: "GET", path: "/healthz", wantCode: 200, check: equals("ok\n")},
		{name: "fetch", method: "GET", path: "/fetch?url=" + url.QueryEscape(srv.URL+"/bytes/300"), wantCode: 200, check: fetched(200, 300, hex.EncodeToString(patternSum[:]))},
		{name: "fetch file", method: "GET", path: "/fetch?timeout=5s&url=" + url.QueryEscape(srv.URL+"/files/f.txt"), wantCode: 200, check: fetched(200, int64(len(content)), hex.EncodeToString(sum[:]))},
		{name: "fetch not found", method: "GET", path: "/fetch?url=" + url.QueryEscape(srv.URL+"/files/nope"), wantCode: 200, check: func(t *testing.T, b []byte) {
			var r fetchResult
			if err := json.Unmarshal(b, &r); err != nil || r.Status != 404 {
				t.Errorf("fetch of a missing file: %s (%v)", b, err)
			}
		}},
		{name: "fetch unreachable", method: "GET", path: "/fetch?url=" + url.QueryEscape(closed.URL+"/"), wantCode: 502},
		{name: "fetch no url", method: "GET", path: "/fetch", wantCode: 400},
		{name: "fetch not http", method: "GET", path: "/fetch?url=file:///etc/passwd", wantCode: 400},
		{name: "fetch bad timeout", method: "GET", path: "/fetch?timeout=-1s&url=" + url.QueryEscape(srv.URL+"/healthz"), wantCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantCode, body)
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}
}

// fetched checks a /fetch answer.
func fetched(status int, n int64, sum string) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		t.Helper()
		var r fetchResult
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		if r.Status != status || r.Bytes != n || r.SHA256 != sum || r.Seconds <= 0 {
			t.Errorf("fetch got %+v, want status %d, %d bytes, sha256 %s", r, status, n, sum)
		}
	}
}

func equals(want string) func(*testing.T, []byte) {
	return func(t *testing.T, got []byte) {
		t.Helper()
		if string(got) != want {
			t.Errorf("body %q, want %q", got, want)
		}
	}
}

func TestUDPEcho(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go serveUDPEcho(pc)
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping 1")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ping 1" {
		t.Fatalf("echo = %q, %v", buf[:n], err)
	}
}
