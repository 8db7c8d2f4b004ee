package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPodSocket(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/var/run/tailscale-cni/pods/default_web-1/tailscaled.sock", true},
		{"/var/run/tailscale-cni/pods/default_web-1/../x/tailscaled.sock", false},
		{"var/run/tailscale-cni/pods/default_web-1/tailscaled.sock", false},
		{"/var/run/tailscale-cni/daemon.sock", false},
		{"/var/run/tailscale-cni/pods/default/tailscaled.sock", false},
		{"/var/run/tailscale-cni/other/default_web/tailscaled.sock", false},
		{"/var/run/tailscale-cni/pods/default_web/other.sock", false},
		{"/var/run/tailscale-cni/pods/a_b_c/tailscaled.sock", false},
	} {
		if err := checkPodSocket(tc.path); (err == nil) != tc.ok {
			t.Errorf("checkPodSocket(%q) = %v; want ok=%v", tc.path, err, tc.ok)
		}
	}
}

// TestRelayPodSocket relays two requests, the second after the end of the
// input, to an echoing socket.
func TestRelayPodSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pods", "default_web-1")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "tailscaled.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			_, _ = io.WriteString(c, "echo "+sc.Text()+"\n")
		}
	}()
	var out bytes.Buffer
	if err := relayPodSocket([]string{sock}, strings.NewReader("one\ntwo\n"), &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "echo one\necho two\n" {
		t.Errorf("relayed %q", out.String())
	}
	err = relayPodSocket([]string{filepath.Join(filepath.Dir(dir), "default_gone", "tailscaled.sock")}, strings.NewReader(""), &out)
	if err == nil || !strings.Contains(err.Error(), "not attached to tailscale-cni") {
		t.Errorf("missing socket: %v", err)
	}
}
