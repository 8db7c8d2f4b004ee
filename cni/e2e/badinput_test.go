package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"tsymbiote.dhouti.dev/testkit"
)

// shim runs the tailscale-cni binary as a runtime does: CNI_* in the
// environment, the netconf on stdin. It returns the CNI error it printed,
// or nil when it succeeded.
func shim(t testing.TB, bins, command string, env map[string]string, conf string) *types.Error {
	t.Helper()
	cmd := exec.Command(filepath.Join(bins, "tailscale-cni"))
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_PATH=" + bins}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return nil
	}
	var te types.Error
	if jerr := json.Unmarshal(stdout.Bytes(), &te); jerr != nil {
		t.Fatalf("%s failed (%v) without CNI error JSON: stdout %q stderr %q", command, err, stdout.String(), stderr.String())
	}
	return &te
}

func (e *env) shimConf(socket string, extra string, withPrev bool, sandbox string) string {
	prev := ""
	if withPrev {
		prev = fmt.Sprintf(`,"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":%q}],"ips":[{"address":"10.1.2.3/24","interface":0}]}`, sandbox)
	}
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"tscni-bad-%s","type":"tailscale-cni","daemonSocket":%q%s%s}`, e.id, socket, extra, prev)
}

// sideDaemon starts an extra daemon with its own socket and dirs and extra
// environment (a broken control plane), without waiting for readiness.
func (e *env) sideDaemon(t testing.TB, name string, extra ...string) string {
	t.Helper()
	dir := filepath.Join(e.dir, name)
	sock := filepath.Join(dir, "daemon.sock")
	env := append(e.daemonEnv(),
		"TS_CNI_STATE_DIR="+filepath.Join(dir, "state"),
		"TS_CNI_RUN_DIR="+filepath.Join(dir, "run"),
		"TS_CNI_SOCKET="+sock,
		"TS_CNI_METRICS_ADDR="+testkit.FreeAddr(t),
	)
	d := e.launchDaemon(t, append(env, extra...), nil)
	d.Name = name + " daemon"
	t.Cleanup(func() {
		_ = d.Stop(20 * time.Second)
		if t.Failed() {
			t.Logf("%s log:\n%s", d.Name, d.Output())
		}
	})
	waitDaemon(t, d, "not ready", 30*time.Second)
	return sock
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	before := e.counts(t)
	p := e.newPod("bad")
	good := map[string]string{
		"CNI_CONTAINERID": p.id, "CNI_NETNS": p.path(), "CNI_IFNAME": "eth0",
		"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME=bad",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	notNS := filepath.Join(e.dir, "not-a-netns")
	if err := os.WriteFile(notNS, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	downSock := e.sideDaemon(t, "cp-down", "HEADSCALE_URL=http://127.0.0.1:1")
	refusedSock := e.sideDaemon(t, "cp-refused", "HEADSCALE_API_KEY=wrong-key")

	for _, tc := range []struct {
		name    string
		cmd     string
		env     map[string]string
		conf    string
		code    uint
		msgPart string
	}{
		{"malformed JSON netconf", "ADD", good, `{"cniVersion":"1.0.0","name":`, types.ErrDecodingFailure, "unmarshal"},
		{"relative daemonSocket", "ADD", good, e.shimConf("run/daemon.sock", "", true, p.path()), types.ErrInvalidNetworkConfig, "absolute"},
		{"bad timeout", "ADD", good, e.shimConf(e.socket, `,"timeout":"soon"`, true, p.path()), types.ErrInvalidNetworkConfig, "timeout"},
		{"missing prevResult", "ADD", good, e.shimConf(e.socket, "", false, ""), types.ErrInvalidNetworkConfig, "prevResult"},
		{"missing netns", "ADD", with("CNI_NETNS", ""), e.shimConf(e.socket, "", true, ""), types.ErrInvalidEnvironmentVariables, "CNI_NETNS"},
		{"nonexistent netns", "ADD", with("CNI_NETNS", "/var/run/netns/tscni-nonexistent-"+e.id), e.shimConf(e.socket, "", true, ""), types.ErrInvalidEnvironmentVariables, "not a network namespace"},
		{"netns is a plain file", "ADD", with("CNI_NETNS", notNS), e.shimConf(e.socket, "", true, ""), types.ErrInvalidEnvironmentVariables, "not a network namespace"},
		{"bad container ID", "ADD", with("CNI_CONTAINERID", "../../etc"), e.shimConf(e.socket, "", true, p.path()), types.ErrInvalidEnvironmentVariables, "containerID"},
		{"daemon socket absent", "ADD", good, e.shimConf(filepath.Join(e.dir, "nope.sock"), "", true, p.path()), types.ErrTryAgainLater, "absent"},
		{"daemon socket absent, STATUS", "STATUS", good, e.shimConf(filepath.Join(e.dir, "nope.sock"), "", false, ""), 50, "unreachable"},
		{"control plane down", "ADD", good, e.shimConf(downSock, "", true, p.path()), types.ErrTryAgainLater, "try again later"},
		{"control plane down, STATUS", "STATUS", good, e.shimConf(downSock, "", false, ""), 50, "cannot add pods"},
		{"key minting refused", "ADD", good, e.shimConf(refusedSock, "", true, p.path()), 101, "refuses"},
		{"CHECK of a container never added", "CHECK", good, e.shimConf(e.socket, "", false, ""), types.ErrInvalidNetworkConfig, "prevResult"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			got := shim(t, e.bins, tc.cmd, tc.env, tc.conf)
			if got == nil {
				t.Fatalf("%s succeeded", tc.cmd)
			}
			t.Logf("%s: code %d: %s: %s", tc.name, got.Code, got.Msg, got.Details)
			if got.Code != tc.code || !strings.Contains(strings.ToLower(got.Msg+" "+got.Details), strings.ToLower(tc.msgPart)) {
				t.Errorf("got code %d %q (%s), want code %d mentioning %q", got.Code, got.Msg, got.Details, tc.code, tc.msgPart)
			}
		})
	}
	// The same commands succeed against the working daemon: STATUS, and
	// DEL of what never got added.
	if err := shim(t, e.bins, "STATUS", good, e.shimConf(e.socket, "", false, "")); err != nil {
		t.Errorf("STATUS against the working daemon: %v", err)
	}
	if err := shim(t, e.bins, "DEL", good, e.shimConf(e.socket, "", false, "")); err != nil {
		t.Errorf("DEL: %v", err)
	}
	if n := len(devicesByID(t, e.cp)); n != 0 {
		t.Errorf("Headscale has %d nodes after failed ADDs, want 0", n)
	}
	if after := e.counts(t); after != before {
		t.Errorf("host objects differ: before %v, after %v", before, after)
	}
}

// TestControlPlaneGoesAway stops Headscale under a ready daemon: ADD must
// fail with "try again later" and leave nothing behind.
func TestControlPlaneGoesAway(t *testing.T) {
	e := newEnv(t)
	before := e.counts(t)
	e.hs.Stop()
	p := e.newPod("nocp")
	got := shim(t, e.bins, "ADD", map[string]string{
		"CNI_CONTAINERID": p.id, "CNI_NETNS": p.path(), "CNI_IFNAME": "eth0",
		"CNI_ARGS": "K8S_POD_NAMESPACE=e2e;K8S_POD_NAME=nocp",
	}, e.shimConf(e.socket, "", true, p.path()))
	if got == nil {
		t.Fatal("ADD succeeded with the control plane down")
	}
	t.Logf("ADD with the control plane stopped: code %d: %s: %s", got.Code, got.Msg, got.Details)
	if got.Code != types.ErrTryAgainLater {
		t.Errorf("code %d, want %d", got.Code, types.ErrTryAgainLater)
	}
	if after := e.counts(t); after != before {
		t.Errorf("host objects differ: before %v, after %v", before, after)
	}
}

// TestDelWhileControlPlaneDown: DEL with the control plane gone still
// succeeds and removes everything on the node (pod deletion must not hang on
// the control plane), keeping only a record of the node to delete later,
// which a restarted daemon never brings back as a pod.
func TestDelWhileControlPlaneDown(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	before := e.counts(t)
	p := e.newPod("orphan")
	if _, err := e.add(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.hs.Stop()
	if err := e.del(ctx, p); err != nil {
		t.Fatalf("DEL with the control plane down: %v", err)
	}
	want := before
	want.StateDirs = 1 // the record of the node still to delete
	if after := e.counts(t); after != want {
		t.Errorf("host objects: %v, want %v", after, want)
	}
	e.stopDaemon(false)
	e.startDaemonNoReady()
	if !strings.Contains(e.daemonLog.String(), "recovered 0 pods") {
		t.Errorf("restarted daemon recovered the deleted pod:\n%s", e.daemonLog.String())
	}
	if after := e.counts(t); after != want {
		t.Errorf("host objects after restart: %v, want %v", after, want)
	}
}
