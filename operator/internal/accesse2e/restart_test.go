package accesse2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tailscale/hujson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/testenv"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
	"tsymbiote.dhouti.dev/testkit"
)

// operator runs the built operator binary with the access controller
// against x's API server and Headscale.
func (x *env) operator(t *testing.T, bin, kubeconfig string) *testkit.Process {
	ports, err := testkit.FreePorts("127.0.0.1", 3)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin,
		"--kubeconfig="+kubeconfig,
		"--namespace=tsymbiote",
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", ports[0]),
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", ports[1]),
		fmt.Sprintf("--webhook-port=%d", ports[2]),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--adapter-image=tsymbiote/adapter:test",
		"--enable-tsymbiote-controller=false",
		"--enable-access-controller",
		"--zap-encoder=json",
	)
	cmd.Env = append(os.Environ(), x.hs.Env()...)
	out := &testkit.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	p, err := testkit.Launch(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("operator output:\n%s", out.String())
		}
	})
	return p
}

// TestAccessOperatorKilled is acceptance item 2: the operator process is
// killed with SIGKILL during an active grant and stays down past its end;
// after the restart the group no longer holds the requester within seconds.
func TestAccessOperatorKilled(t *testing.T) {
	testkit.Integration(t)
	bin := testkit.BuildOnce(t, "tsymbiote.dhouti.dev/operator/cmd/tsymbiote-operator")
	x := start(t, false, requester, approver)
	ctx := context.Background()
	if err := x.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tsymbiote"}}); err != nil {
		t.Fatal(err)
	}
	u, err := x.env.ControlPlane.AddUser(envtest.User{Name: "operator", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, _ := u.KubeConfig()
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	p := x.operator(t, bin, kcPath)

	x.target("prod", "group:prod", func(s *accessv1.AccessTargetSpec) { s.Approvers = []string{"k8s:user:admin"} })
	if err := x.request("req-1", "prod", requester, time.Minute, "incident"); err != nil {
		t.Fatal(err)
	}
	x.waitPhase("req-1", 60*time.Second, accessv1.PhasePending)
	if err := x.decide(x.admin, "req-1", accessv1.ActionApprove, "k8s:user:admin", "go"); err != nil {
		t.Fatal(err)
	}
	ar := x.waitPhase("req-1", 30*time.Second, accessv1.PhaseActive)
	if !slices.Contains(x.members("group:prod"), requester) {
		t.Fatalf("group:prod = %v after the grant", x.members("group:prod"))
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	t.Logf("operator killed (SIGKILL) at %s, grant expires at %s", time.Now().UTC().Format("15:04:05"), ar.Status.ExpiresAt.UTC().Format("15:04:05"))
	time.Sleep(time.Until(ar.Status.ExpiresAt.Time) + 5*time.Second)
	if ms := x.members("group:prod"); !slices.Contains(ms, requester) {
		t.Fatalf("group:prod = %v while the operator was down: who revoked it?", ms)
	}
	t.Logf("5s past the end, operator down: group:prod = %v (overdue)", x.members("group:prod"))

	restarted := time.Now()
	x.operator(t, bin, kcPath)
	testenv.Eventually(t, 60*time.Second, "revoked after the restart", func() error {
		if ms := x.members("group:prod"); slices.Contains(ms, requester) {
			return fmt.Errorf("group:prod = %v", ms)
		}
		return nil
	})
	t.Logf("FIGURE operator restart -> requester out of group:prod: %.2f s", time.Since(restarted).Seconds())
	ar = x.waitPhase("req-1", 10*time.Second, accessv1.PhaseExpired)
	printHistory(t, ar)
}

// TestAccessConcurrentWriter is acceptance item 3: while 20 grants are
// made and revoked, another writer edits an unrelated part of the policy
// 50 times through its own compare-and-swap; at the end all 50 edits are
// there and the group holds exactly the active grants.
func TestAccessConcurrentWriter(t *testing.T) {
	testkit.Integration(t)
	var logins []string
	for i := range 10 {
		logins = append(logins, fmt.Sprintf("user%d@example.com", i))
	}
	x := start(t, false, logins...)
	x.manager(nil)
	x.target("prod", "group:prod", func(s *accessv1.AccessTargetSpec) { s.Approvers = []string{"k8s:user:admin"} })
	ctx := context.Background()

	var wg sync.WaitGroup
	var writerConflicts, writerLost int
	var writerErr error
	wg.Go(func() {
		for i := range 50 {
			res, err := controlplane.EditPolicy(ctx, x.pe, func(body string) (string, bool, error) {
				return addHost(body, i)
			}, controlplane.EditOptions{Attempts: 20})
			if err != nil {
				writerErr = fmt.Errorf("edit %d: %w", i, err)
				return
			}
			writerConflicts += res.Conflicts
			writerLost += res.Lost
			time.Sleep(time.Duration(rand.N(60)) * time.Millisecond)
		}
	})

	// 20 requests over 10 logins: each login has two grants, so it must
	// stay in the group until both end.
	for i := range 20 {
		name := fmt.Sprintf("req-%02d", i)
		if err := x.request(name, "prod", logins[i%10], 10*time.Minute, "load"); err != nil {
			t.Fatal(err)
		}
		x.waitPhase(name, 30*time.Second, accessv1.PhasePending)
		if err := x.decide(x.admin, name, accessv1.ActionApprove, "k8s:user:admin", ""); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		x.waitPhase(fmt.Sprintf("req-%02d", i), 60*time.Second, accessv1.PhaseActive)
	}
	checkGroup(t, x, "all 20 active")
	// Revoke the first grant of every login, then the second, in a random order.
	order := rand.Perm(20)
	for k, i := range order {
		if err := x.decide(x.admin, fmt.Sprintf("req-%02d", i), accessv1.ActionRevoke, "k8s:user:admin", "done"); err != nil {
			t.Fatal(err)
		}
		if k == 9 {
			for _, j := range order[:10] {
				x.waitPhase(fmt.Sprintf("req-%02d", j), 60*time.Second, accessv1.PhaseRevoked)
			}
			checkGroup(t, x, "10 revoked")
		}
	}
	for i := range 20 {
		x.waitPhase(fmt.Sprintf("req-%02d", i), 60*time.Second, accessv1.PhaseRevoked)
	}
	wg.Wait()
	if writerErr != nil {
		t.Fatal(writerErr)
	}
	checkGroup(t, x, "all revoked")
	body := x.policy()
	missing := 0
	for i := range 50 {
		if _, changed, _ := addHost(body, i); changed {
			missing++
			t.Errorf("the writer's edit %d is missing", i)
		}
	}
	t.Logf("FIGURE concurrent writer: %d/50 edits present, %d conflicts retried, %d edits found overwritten on read-back and redone; group:prod = %v",
		50-missing, writerConflicts, writerLost, x.members("group:prod"))
}

// addHost adds host h<i> to the policy's hosts (an unrelated part of the
// policy), creating the object the first time.
func addHost(body string, i int) (string, bool, error) {
	v, err := hujson.Parse([]byte(body))
	if err != nil {
		return "", false, err
	}
	name := fmt.Sprintf("h%d", i)
	if v.Find("/hosts/"+name) != nil {
		return body, false, nil
	}
	var ops []map[string]any
	if v.Find("/hosts") == nil {
		ops = append(ops, map[string]any{"op": "add", "path": "/hosts", "value": map[string]string{}})
	}
	ops = append(ops, map[string]any{"op": "add", "path": "/hosts/" + name, "value": fmt.Sprintf("100.100.%d.%d", i/250, 1+i%250)})
	patch, _ := json.Marshal(ops)
	if err := v.Patch(patch); err != nil {
		return "", false, err
	}
	return string(v.Pack()), true, nil
}

// checkGroup compares the group with the logins of the active grants.
func checkGroup(t *testing.T, x *env, when string) {
	t.Helper()
	var list accessv1.AccessRequestList
	if err := x.admin.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, ar := range list.Items {
		if ar.Status.Phase == accessv1.PhaseActive && !slices.Contains(want, ar.Spec.Requester) {
			want = append(want, ar.Spec.Requester)
		}
	}
	got := slices.Clone(x.members("group:prod"))
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s: group:prod = %v, active grants' logins = %v", when, got, want)
		return
	}
	t.Logf("%s: group:prod = active grants' logins (%d)", when, len(got))
}
