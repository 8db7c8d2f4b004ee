package main

import (
	"slices"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/cni/internal/daemon"
	"tsymbiote.dhouti.dev/proto/contract"
)

// TestFlags parses the arguments the Helm chart passes
// (charts/tailscale-cni/templates/daemonset.yaml) and checks the defaults,
// some of which come from the environment.
func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want flags
	}{
		{
			name: "defaults",
			want: flags{
				socket: daemon.DefaultSocket, stateDir: daemon.DefaultStateDir, runDir: daemon.DefaultRunDir,
				metricsAddr: "127.0.0.1:9392", addTimeout: daemon.DefaultAddTimeout, publishWait: daemon.DefaultPublishWait,
				procSysNet: "/proc/sys/net", poolSize: daemon.DefaultPoolSize,
			},
		},
		{
			name: "environment",
			env:  map[string]string{"TS_CNI_SOCKET": "/s.sock", "TS_CNI_STATE_DIR": "/st", "TS_CNI_RUN_DIR": "/r", "TS_CNI_METRICS_ADDR": "127.0.0.1:1", "TS_CNI_PROC_SYS_NET": "/p", "TS_CNI_POOL_SIZE": "5"},
			want: flags{
				socket: "/s.sock", stateDir: "/st", runDir: "/r",
				metricsAddr: "127.0.0.1:1", addTimeout: daemon.DefaultAddTimeout, publishWait: daemon.DefaultPublishWait,
				procSysNet: "/p", poolSize: 5,
			},
		},
		{
			name: "chart",
			args: []string{
				"--socket=/var/run/tailscale-cni/daemon.sock", "--state-dir=/var/lib/tailscale-cni",
				"--run-dir=/var/run/tailscale-cni", "--metrics-addr=127.0.0.1:9392", "--proc-sys-net=/host/proc/sys/net", "--add-timeout=60s", "--verbose", "--pool-size=0",
			},
			want: flags{
				socket: "/var/run/tailscale-cni/daemon.sock", stateDir: "/var/lib/tailscale-cni", runDir: "/var/run/tailscale-cni",
				metricsAddr: "127.0.0.1:9392", addTimeout: time.Minute, publishWait: daemon.DefaultPublishWait, verbose: true,
				procSysNet: "/host/proc/sys/net", poolSize: 0,
			},
		},
		{
			name: "separate values",
			args: []string{"--publish-wait", "-1s", "--add-waits-for-running", "--socket", "/x.sock"},
			want: flags{
				socket: "/x.sock", stateDir: daemon.DefaultStateDir, runDir: daemon.DefaultRunDir,
				metricsAddr: "127.0.0.1:9392", addTimeout: daemon.DefaultAddTimeout, publishWait: -time.Second, waitRunning: true,
				procSysNet: "/proc/sys/net", poolSize: daemon.DefaultPoolSize,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got flags
			cmd := newCommand(func(k string) string { return tc.env[k] })
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			f := cmd.Flags()
			got.socket, _ = f.GetString("socket")
			got.stateDir, _ = f.GetString("state-dir")
			got.runDir, _ = f.GetString("run-dir")
			got.metricsAddr, _ = f.GetString("metrics-addr")
			got.procSysNet, _ = f.GetString("proc-sys-net")
			got.addTimeout, _ = f.GetDuration("add-timeout")
			got.publishWait, _ = f.GetDuration("publish-wait")
			got.waitRunning, _ = f.GetBool("add-waits-for-running")
			got.verbose, _ = f.GetBool("verbose")
			got.poolSize, _ = f.GetInt("pool-size")
			if got != tc.want {
				t.Errorf("flags = %+v\nwant    %+v", got, tc.want)
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{"CLUSTER_NAME": "prod", "AUTH_KEY_TTL": "10m", "TS_CNI_EPHEMERAL": "false"}
	cfg, err := configFromEnv(func(k string) string { return env[k] }, flags{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClusterName != "prod" || cfg.AuthKeyTTL != 10*time.Minute || cfg.Ephemeral || !cfg.IPv6 || !slices.Equal(cfg.Tags, []string{contract.TagPod}) {
		t.Errorf("config = %+v", cfg)
	}
	for _, bad := range []map[string]string{{"AUTH_KEY_TTL": "-1m"}, {"TS_CNI_IPV6": "maybe"}, {"TS_TAGS": "k8s"}, {"TS_CNI_POOL_SIZE": "-1"}, {"TS_CNI_POOL_SIZE": "two"}, {"TS_CNI_POOL_MAX": "x"}, {"TS_CNI_POOL_IDLE": "5"}} {
		if _, err := configFromEnv(func(k string) string { return bad[k] }, flags{}); err == nil {
			t.Errorf("configFromEnv(%v) accepted it", bad)
		}
	}
	if _, err := configFromEnv(func(string) string { return "" }, flags{poolSize: 2, poolTuning: daemon.PoolTuning{Max: 1}}); err == nil || err.Error() != "--pool-max 1: want 0 (four times --pool-size) or at least --pool-size (2)" {
		t.Errorf("--pool-max below --pool-size: %v", err)
	}
}
