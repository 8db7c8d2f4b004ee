package main

import (
	"testing"

	"tsymbiote.dhouti.dev/cni/internal/plugin"
)

// TestFlags parses the arguments the Helm chart passes to install-cni, as
// the init container and as the preStop hook
// (charts/tailscale-cni/templates/daemonset.yaml).
func TestFlags(t *testing.T) {
	defaults := options{
		shim: "/opt/tailscale-cni/tailscale-cni", binDir: "/host/opt/cni/bin",
		confDir: "/host/etc/cni/net.d", socket: plugin.DefaultDaemonSocket,
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
			env:  map[string]string{"TS_CNI_SHIM": "/s", "CNI_BIN_DIR": "/b", "CNI_CONF_DIR": "/c", "TS_CNI_SOCKET": "/d.sock", "TS_CNI_SHIM_TIMEOUT": "90s"},
			want: options{shim: "/s", binDir: "/b", confDir: "/c", socket: "/d.sock", timeout: "90s"},
		},
		{
			name: "chart init container",
			args: []string{"--shim=/opt/tailscale-cni/tailscale-cni", "--cni-bin-dir=/host/cni-bin", "--cni-conf-dir=/host/cni-conf", "--daemon-socket=/var/run/tailscale-cni/daemon.sock"},
			want: options{shim: "/opt/tailscale-cni/tailscale-cni", binDir: "/host/cni-bin", confDir: "/host/cni-conf", socket: "/var/run/tailscale-cni/daemon.sock"},
		},
		{
			name: "chart preStop",
			args: []string{"--uninstall", "--cni-bin-dir=/host/cni-bin", "--cni-conf-dir=/host/cni-conf"},
			want: options{shim: defaults.shim, binDir: "/host/cni-bin", confDir: "/host/cni-conf", socket: defaults.socket, uninstall: true},
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
			if got != tc.want {
				t.Errorf("options = %+v\nwant      %+v", got, tc.want)
			}
		})
	}
}
