package main

import (
	"bytes"
	"context"
	"errors"
	"log"
	"os"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/cni/internal/plugin"
	"tsymbiote.dhouti.dev/cni/internal/release"
)

// TestFlags parses the arguments the Helm chart passes to install-cni, as
// the init container and as the preStop hook
// (charts/tailscale-cni/templates/daemonset.yaml).
func TestFlags(t *testing.T) {
	defaults := options{
		shim: "/opt/tailscale-cni/tailscale-cni", binDir: "/host/opt/cni/bin",
		confDir: "/host/etc/cni/net.d", socket: plugin.DefaultDaemonSocket,
		checkTimeout: 10 * time.Second,
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want options
	}{
		{name: "defaults", want: defaults},
		{
			name: "environment",
			env:  map[string]string{"TS_CNI_SHIM": "/s", "CNI_BIN_DIR": "/b", "CNI_CONF_DIR": "/c", "TS_CNI_SOCKET": "/d.sock", "TS_CNI_SHIM_TIMEOUT": "90s", "POD_NAMESPACE": "kube-system"},
			want: options{shim: "/s", binDir: "/b", confDir: "/c", socket: "/d.sock", timeout: "90s", namespace: "kube-system", checkTimeout: 10 * time.Second},
		},
		{
			name: "chart init container",
			args: []string{"--shim=/opt/tailscale-cni/tailscale-cni", "--cni-bin-dir=/host/cni-bin", "--cni-conf-dir=/host/cni-conf", "--daemon-socket=/var/run/tailscale-cni/daemon.sock"},
			want: options{shim: "/opt/tailscale-cni/tailscale-cni", binDir: "/host/cni-bin", confDir: "/host/cni-conf", socket: "/var/run/tailscale-cni/daemon.sock", checkTimeout: 10 * time.Second},
		},
		{
			name: "chart preStop, uninstallOnStop always",
			args: []string{"--uninstall", "--cni-bin-dir=/host/cni-bin", "--cni-conf-dir=/host/cni-conf"},
			want: options{shim: defaults.shim, binDir: "/host/cni-bin", confDir: "/host/cni-conf", socket: defaults.socket, uninstall: true, checkTimeout: 10 * time.Second},
		},
		{
			name: "chart preStop, uninstallOnStop released",
			args: []string{"--uninstall", "--when-daemonset-gone=tailscale-cni", "--check-timeout=10s", "--cni-bin-dir=/host/cni-bin", "--cni-conf-dir=/host/cni-conf", "--log-file=/proc/1/fd/1"},
			want: options{shim: defaults.shim, binDir: "/host/cni-bin", confDir: "/host/cni-conf", socket: defaults.socket, uninstall: true, whenGone: "tailscale-cni", checkTimeout: 10 * time.Second, logFile: "/proc/1/fd/1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newCommand(func(k string) string { return tc.env[k] })
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			f := cmd.Flags()
			var got options
			got.shim, _ = f.GetString("shim")
			got.binDir, _ = f.GetString("cni-bin-dir")
			got.confDir, _ = f.GetString("cni-conf-dir")
			got.socket, _ = f.GetString("daemon-socket")
			got.timeout, _ = f.GetString("timeout")
			got.uninstall, _ = f.GetBool("uninstall")
			got.whenGone, _ = f.GetString("when-daemonset-gone")
			got.namespace, _ = f.GetString("namespace")
			got.logFile, _ = f.GetString("log-file")
			got.checkTimeout, _ = f.GetDuration("check-timeout")
			if got != tc.want {
				t.Errorf("options = %+v\nwant      %+v", got, tc.want)
			}
		})
	}
}

// TestShouldUninstall checks the preStop hook's decision: only an answer
// that the DaemonSet is going away removes the chain.
func TestShouldUninstall(t *testing.T) {
	for _, tc := range []struct {
		name    string
		verdict release.Verdict
		err     error
		want    bool
		logLine string
	}{
		{name: "restart", verdict: release.Keep, want: false, logLine: "keeping tailscale-cni chained: why"},
		{name: "uninstall", verdict: release.Remove, want: true, logLine: "removing tailscale-cni: why"},
		{name: "no answer", verdict: release.Remove, err: errors.New("timeout"), want: false, logLine: "keeping tailscale-cni chained: daemonset ds: timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log.SetOutput(&buf)
			t.Cleanup(func() { log.SetOutput(os.Stderr) })
			decide := func(_ context.Context, name string) (release.Verdict, string, error) {
				if name != "ds" {
					t.Errorf("asked about %q", name)
				}
				return tc.verdict, "why", tc.err
			}
			if got := shouldUninstall(context.Background(), decide, "ds"); got != tc.want {
				t.Errorf("shouldUninstall = %v, want %v", got, tc.want)
			}
			if !strings.Contains(buf.String(), tc.logLine) {
				t.Errorf("log %q, want %q", buf.String(), tc.logLine)
			}
		})
	}
}
