package adapter_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/adapter"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
)

// TestLogout is acceptance item 5, run through the real command: with
// --logout (the default) the adapter's node is gone from Headscale after
// exit; with --logout=false it stays. A third case shows that an ephemeral
// key needs no API credentials: logging out removes the node.
func TestLogout(t *testing.T) {
	hs := headscaletest.Start(t, headscaletest.Options{})
	d := tailscaledtest.Start(t, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := d.Up(ctx, hs.URL, mintKey(t, hs, false, headscaletest.TagTest), "node-a"); err != nil {
		t.Fatal(err)
	}
	cp := controlPlane(t, hs)
	adapterNodes := func() []controlplane.Device {
		devs, err := cp.ListDevices(ctx, controlplane.ListOptions{Tag: headscaletest.TagAdapter})
		if err != nil {
			t.Fatal(err)
		}
		return devs
	}

	for _, tc := range []struct {
		name      string
		args      []string
		wantGone  bool
		ephemeral bool
		apiCreds  bool
	}{
		{"default --logout, API credentials", nil, true, false, true},
		{"--logout=false", []string{"--logout=false"}, false, false, true},
		{"--logout, ephemeral key, no API credentials", []string{"--logout"}, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := "adapter-" + fmt.Sprint(time.Now().UnixNano()%100000)
			env := []string{
				"HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + t.TempDir(),
				"TS_AUTHKEY=" + mintKey(t, hs, tc.ephemeral, headscaletest.TagAdapter),
				"HEADSCALE_URL=" + hs.URL,
			}
			if tc.apiCreds {
				env = append(env, "HEADSCALE_API_KEY="+hs.APIKey)
			}
			p := startAdapterCmd(t, env, append([]string{"--socket", d.Socket, "--hostname", host, "-p", "3621"}, tc.args...)...)
			var found bool
			for _, dv := range adapterNodes() {
				found = found || dv.Hostname == host
			}
			if !found {
				t.Fatalf("adapter %s not in Headscale while running", host)
			}
			p.stop(t)
			var after *controlplane.Device
			for _, dv := range adapterNodes() {
				if dv.Hostname == host {
					after = &dv
				}
			}
			t.Logf("after exit: present=%v; adapter's last lines: %q", after != nil, p.lastLines(3))
			if tc.wantGone && after != nil {
				t.Errorf("node %s still in Headscale after exit with --logout: %+v", host, *after)
			}
			if !tc.wantGone && after == nil {
				t.Errorf("node %s gone from Headscale after exit with --logout=false", host)
			}
		})
	}
}

// TestDevMode runs the adapter with --dev: plain gRPC on localhost, no
// tailnet node, every local caller admitted.
func TestDevMode(t *testing.T) {
	d := tailscaledtest.Start(t, "dev")
	readyc := make(chan adapter.Ready, 1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- adapter.Run(ctx, logger.WithPrefix(t.Logf, "adapter: "), adapter.Config{
			AllowedTag: adapter.DefaultAllowedTag, HostnamePrefix: adapter.DefaultHostnamePrefix,
			Dev: true, Port: "0", Sockets: []string{d.Socket},
			OnReady: func(r adapter.Ready) { readyc <- r },
		})
	}()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var r adapter.Ready
	select {
	case r = <-readyc:
	case err := <-errc:
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Addr.String(), "127.0.0.1:") || len(r.TailscaleIPs) != 0 {
		t.Fatalf("dev mode listening on %v with tailnet IPs %v", r.Addr, r.TailscaleIPs)
	}
	c := devClient(t, r.Addr.String())
	st, err := c.Status(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dev mode on %s: target %s is %s", r.Addr, st.Target, st.BackendState)
	// The service describes itself through reflection.
	conn, err := grpc.NewClient("passthrough:///"+r.Addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	lr, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, s := range lr.GetListServicesResponse().GetService() {
		services = append(services, s.Name)
	}
	if !slices.Contains(services, "adapter.v1.AdapterService") {
		t.Errorf("reflection lists %v", services)
	}
	code, body := plainGet(t, r.Addr.String(), "/healthz")
	if code != 200 {
		t.Errorf("/healthz: %d %s", code, body)
	}
	code, body = plainGet(t, r.Addr.String(), "/metrics")
	if code != 200 || !strings.Contains(body, `tsymbiote_adapter_calls_total{code="OK",method="Status"} 1`) {
		t.Errorf("/metrics: %d\n%s", code, grepLines(body, "tsymbiote_adapter"))
	}
}
