package webui

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
	"tsymbiote.dhouti.dev/testkit/tailscaledtest"
)

// TestAccessCLI runs the access API against a real kube-apiserver (envtest,
// with the operator's CRDs) and real tailnet identities: the WebUI on tsnet
// with --access, two Headscale users each on a real tailscaled, and the
// `tsymbiote access` CLI run as a process through each tailscaled's
// LocalAPI (--socket). It checks what lands in the AccessRequest
// (requester and decision.by from WhoIs), the CLI's refusals, and plays
// the operator's part (status) so that the grant's time left shows.
func TestAccessCLI(t *testing.T) {
	testkit.Integration(t)
	cli := testkit.BuildOnce(t, "tsymbiote.dhouti.dev/tsymbiote/cmd/tsymbiote")
	restCfg, kc := startEnvtest(t)
	hs := headscaletest.Start(t, headscaletest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	if err := kc.Create(ctx, &accessv1.AccessTarget{
		ObjectMeta: metav1.ObjectMeta{Name: "prod"},
		Spec: accessv1.AccessTargetSpec{Group: "group:prod", Label: "Prod SSH", Approvers: []string{"bob@example.com"},
			MaxDuration: metav1.Duration{Duration: time.Hour}, RequireReason: true},
	}); err != nil {
		t.Fatal(err)
	}

	store, err := NewKubeAccessStore(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	readyc := make(chan Ready, 1)
	startWebUIReady(t, hs, func(c *Config) {
		c.Dev = false
		c.Port = "3621"
		c.Access = true
		c.AccessStore = store
	}, readyc)
	ready := <-readyc

	sockets := map[string]string{}
	for _, name := range []string{"alice", "bob"} {
		id, err := hs.CreateUser(ctx, name, name+"@example.com")
		if err != nil {
			t.Fatal(err)
		}
		key, err := hs.UserKey(ctx, id, true)
		if err != nil {
			t.Fatal(err)
		}
		d := tailscaledtest.Start(t, name)
		if err := d.Up(ctx, hs.URL, key, name+"-laptop"); err != nil {
			t.Fatalf("%s up: %v", name, err)
		}
		sockets[name] = d.Socket
	}
	server := "http://" + ready.Hostname + ":3621"
	run := func(who string, args ...string) (string, error) {
		t.Helper()
		full := append([]string{"access", "--server", server, "--socket", sockets[who]}, args...)
		cmd := exec.CommandContext(ctx, cli, full...)
		cmd.Env = append(os.Environ(), tailscaledtest.Env...)
		b, err := cmd.CombinedOutput()
		t.Logf("%s$ tsymbiote %s\n%s", who, strings.Join(args, " "), strings.TrimRight(string(b), "\n"))
		return string(b), err
	}
	// The first call waits for the WireGuard session and MagicDNS name.
	var out string
	for i := 0; ; i++ {
		out, err = run("alice", "list", "targets")
		if err == nil {
			break
		}
		if i == 20 {
			t.Fatalf("the WebUI never answered through alice's tailscaled: %v", err)
		}
		time.Sleep(time.Second)
	}
	if !strings.Contains(out, "group:prod") || !strings.Contains(out, "bob@example.com") {
		t.Errorf("list targets: %s", out)
	}

	// Refusals, each with its message, and nothing created.
	for _, tc := range []struct {
		who  string
		args []string
		want string
	}{
		{"alice", []string{"request", "prod", "--for", "2h", "--reason", "x"}, "duration 2h0m0s is over target prod's maximum of 1h0m0s"},
		{"alice", []string{"request", "nope", "--for", "2m"}, `not found (404): unknown target "nope" (targets: prod)`},
		{"alice", []string{"request", "prod", "--for", "2m"}, "target prod requires a reason"},
	} {
		if out, err := run(tc.who, tc.args...); err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s %v: %v, want %q", tc.who, tc.args, err, tc.want)
		}
	}
	var l accessv1.AccessRequestList
	if err := kc.List(ctx, &l); err != nil || len(l.Items) != 0 {
		t.Fatalf("refused requests created %d AccessRequests (%v)", len(l.Items), err)
	}

	out, err = run("alice", "request", "prod", "--for", "2m", "--reason", "incident 42", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var created []AccessRequest
	if err := json.Unmarshal([]byte(out), &created); err != nil || len(created) != 1 {
		t.Fatalf("request -o json: %v", err)
	}
	name := created[0].Name
	var ar accessv1.AccessRequest
	if err := kc.Get(ctx, client.ObjectKey{Name: name}, &ar); err != nil {
		t.Fatal(err)
	}
	if ar.Spec.Requester != "alice@example.com" || ar.Spec.Target != "prod" || ar.Spec.Duration.Duration != 2*time.Minute || ar.Spec.Reason != "incident 42" {
		t.Fatalf("AccessRequest spec: %+v", ar.Spec)
	}
	t.Logf("AccessRequest %s: requester %s (from WhoIs), %v, %q", name, ar.Spec.Requester, ar.Spec.Duration.Duration, ar.Spec.Reason)

	if out, err := run("alice", "approve", name); err == nil || !strings.Contains(out, "refused (403): alice@example.com is not an approver of target prod") {
		t.Errorf("self-approval: %v", err)
	}
	if out, err := run("bob", "list", "pending"); err != nil || !strings.Contains(out, name) {
		t.Errorf("bob's pending: %v", err)
	}
	if _, err := run("bob", "approve", name, "--reason", "go ahead"); err != nil {
		t.Fatal(err)
	}
	if err := kc.Get(ctx, client.ObjectKey{Name: name}, &ar); err != nil {
		t.Fatal(err)
	}
	if d := ar.Spec.Decision; d == nil || d.Action != accessv1.ActionApprove || d.By != "bob@example.com" || d.Reason != "go ahead" {
		t.Fatalf("decision: %+v", ar.Spec.Decision)
	}
	t.Logf("decision: %s by %s (from WhoIs)", ar.Spec.Decision.Action, ar.Spec.Decision.By)
	if out, err := run("bob", "deny", name); err == nil || !strings.Contains(out, "already decided") {
		t.Errorf("deny after approve: %v", err)
	}

	// The operator's part: the grant is in the policy until now+2m.
	now := metav1.Now()
	exp := metav1.NewTime(now.Add(2 * time.Minute))
	ar.Status = accessv1.AccessRequestStatus{Phase: accessv1.PhaseActive, ApprovedAt: &now, GrantedAt: &now, ExpiresAt: &exp,
		History: []accessv1.HistoryEntry{{Time: ar.CreationTimestamp, Event: accessv1.EventRequested, By: "alice@example.com"}, {Time: now, Event: accessv1.EventApproved, By: "bob@example.com"}, {Time: now, Event: accessv1.EventGranted}}}
	if err := kc.Status().Update(ctx, &ar); err != nil {
		t.Fatal(err)
	}
	out, err = run("alice", "list", "active")
	if left := regexp.MustCompile(`Active +(1m5\ds|2m) `); err != nil || !left.MatchString(out) {
		t.Errorf("alice's active grants: %v", err)
	}
	if out, err := run("alice", "revoke", name, "--reason", "done early"); err != nil {
		t.Fatalf("revoke: %v %s", err, out)
	}
	if err := kc.Get(ctx, client.ObjectKey{Name: name}, &ar); err != nil {
		t.Fatal(err)
	}
	if d := ar.Spec.Decision; d == nil || d.Action != accessv1.ActionRevoke || d.By != "alice@example.com" {
		t.Fatalf("after revoke: %+v", ar.Spec.Decision)
	}
	t.Logf("revoke: decision %s by %s", ar.Spec.Decision.Action, ar.Spec.Decision.By)
}

// startEnvtest starts etcd and kube-apiserver (the pinned builds in ./bin)
// with the operator's CRDs, and returns its config and a client of the
// access types.
func startEnvtest(t *testing.T) (*rest.Config, client.Client) {
	t.Helper()
	assets := t.TempDir()
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if err := os.Symlink(testkit.Binary(t, name), filepath.Join(assets, name)); err != nil {
			t.Fatal(err)
		}
	}
	scheme := runtime.NewScheme()
	if err := accessv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join("..", "operator", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	start := time.Now()
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping envtest: %v", err)
		}
	})
	t.Logf("etcd + kube-apiserver up in %v", time.Since(start).Round(time.Millisecond))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, c
}
