package accesse2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"tailscale.com/tsnet"

	"tsymbiote.dhouti.dev/operator/internal/testenv"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

func isConflict(err error) bool { return apierrors.IsConflict(err) }

// waitTarget waits for a target's Ready condition and active grant count.
func (x *env) waitTarget(name string, ready metav1.ConditionStatus, active int32) {
	x.t.Helper()
	testenv.Eventually(x.t, 30*time.Second, "target "+name, func() error {
		t := &accessv1.AccessTarget{}
		if err := x.admin.Get(context.Background(), types.NamespacedName{Name: name}, t); err != nil {
			return err
		}
		c := meta.FindStatusCondition(t.Status.Conditions, accessv1.ConditionReady)
		if c == nil || c.Status != ready || t.Status.ActiveGrants != active {
			return fmt.Errorf("status %+v", t.Status)
		}
		x.t.Logf("target %s: Ready=%s (%s: %s), activeGrants=%d", name, c.Status, c.Reason, c.Message, t.Status.ActiveGrants)
		return nil
	})
}

const (
	requester = "requester@example.com"
	approver  = "approver@example.com"
)

// dialOnce reports whether from reaches addr over TCP within 1s.
func dialOnce(from *tsnet.Server, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil {
		return err
	}
	if string(buf) != "ok" {
		return fmt.Errorf("read %q", buf)
	}
	return nil
}

// TestAccessEndToEnd is acceptance item 1: a requester's node cannot reach
// a tag:prod node; it asks for one minute, the approver approves, the
// operator puts the login into group:prod, the node reaches prod over TCP;
// after the minute the login is taken out and the connection is refused.
// Then item 4 (without the browser): refusals with clear messages and
// nothing written to the policy.
func TestAccessEndToEnd(t *testing.T) {
	testkit.Integration(t)
	x := start(t, true, requester, approver)
	x.manager(nil)
	ctx := context.Background()

	// The prod node (tag:prod) answers "ok" on port 80; the requester's
	// node is the requester's own.
	prod, prodSt := x.hs.NewNode(t, headscaletest.NodeOptions{Hostname: "prod", Tags: []string{"tag:prod"}})
	ln, err := prod.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ok"))
			c.Close()
		}
	}()
	key, err := x.hs.UserKey(ctx, x.userID[requester], true)
	if err != nil {
		t.Fatal(err)
	}
	node, _ := x.hs.NewNode(t, headscaletest.NodeOptions{Hostname: "laptop", AuthKey: key, Ephemeral: true})
	addr := netip.AddrPortFrom(prodSt.Self.TailscaleIPs[0], 80).String()

	if err := dialOnce(node, addr); err == nil {
		t.Fatalf("the requester reaches prod before any grant")
	} else {
		t.Logf("before the grant: %s -> prod %s refused: %v", requester, addr, err)
	}

	x.target("prod", "group:prod", func(s *accessv1.AccessTargetSpec) {
		s.Approvers = []string{approver, requester}
		s.RequireReason = true
	})
	if err := x.request("req-1", "prod", requester, time.Minute, "deploy hotfix"); err != nil {
		t.Fatalf("request: %v", err)
	}
	x.waitPhase("req-1", 30*time.Second, accessv1.PhasePending)
	if err := dialOnce(node, addr); err == nil {
		t.Fatalf("a pending request gives access")
	}

	approved := time.Now()
	if err := x.decide(x.webui, "req-1", accessv1.ActionApprove, approver, "ok for an hour... a minute"); err != nil {
		t.Fatalf("approve: %v", err)
	}
	var connected time.Time
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := dialOnce(node, addr); err == nil {
			connected = time.Now()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection 60s after approval; group:prod = %v", x.members("group:prod"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	x.waitPhase("req-1", 10*time.Second, accessv1.PhaseActive)
	t.Logf("FIGURE approval -> first TCP connect to prod: %.2f s (group:prod = %v)", connected.Sub(approved).Seconds(), x.members("group:prod"))
	x.waitTarget("prod", metav1.ConditionTrue, 1)

	// Wait for the end of the grant, then for the refusal.
	ar := x.waitPhase("req-1", 90*time.Second, accessv1.PhaseExpired)
	ended := time.Now()
	if len(x.members("group:prod")) != 0 {
		t.Errorf("group:prod after expiry = %v, want empty", x.members("group:prod"))
	}
	deadline = time.Now().Add(60 * time.Second)
	for dialOnce(node, addr) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("prod still reachable 60s after the grant expired")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("FIGURE expiry (status Expired seen) -> first refused TCP connect: %.2f s; expiresAt %s, endedAt %s",
		time.Since(ended).Seconds(), ar.Status.ExpiresAt.UTC().Format(time.RFC3339), ar.Status.EndedAt.UTC().Format(time.RFC3339))
	t.Logf("history of req-1:")
	printHistory(t, ar)
	var events []string
	for _, h := range ar.Status.History {
		events = append(events, h.Event)
	}
	if got := strings.Join(events, ","); got != "Requested,Approved,Granted,Expired" {
		t.Errorf("history events = %s", got)
	}

	refusals(t, x)
}

// refusals is acceptance item 4 without the browser: each request or
// decision is refused by the webhook with a message naming the problem,
// and the policy is not written.
func refusals(t *testing.T, x *env) {
	before := x.policy()
	x.target("prod-selfless", "group:prod", func(s *accessv1.AccessTargetSpec) { s.Approvers = []string{approver, requester} })
	x.target("missing-group", "group:missing", func(s *accessv1.AccessTargetSpec) { s.Approvers = []string{approver} })
	mallory := x.clientAs("mallory", nil)
	if err := x.request("req-self", "prod-selfless", requester, 5*time.Minute, ""); err != nil {
		t.Fatal(err)
	}
	x.waitPhase("req-self", 30*time.Second, accessv1.PhasePending)
	x.waitTarget("missing-group", metav1.ConditionFalse, 0)

	cases := []struct {
		name string
		do   func() error
		want string
	}{
		{"self-approval", func() error { return x.decide(x.webui, "req-self", accessv1.ActionApprove, requester, "me") }, "self-approval is not allowed"},
		{"non-approver (kubectl)", func() error { return x.decide(mallory, "req-self", accessv1.ActionApprove, "", "") }, "k8s:user:mallory is not an approver"},
		{"forged approver (kubectl)", func() error { return x.decide(mallory, "req-self", accessv1.ActionApprove, approver, "") }, "only the WebUI may decide as a tailnet login"},
		{"non-approver (WebUI)", func() error {
			return x.decide(x.webui, "req-self", accessv1.ActionApprove, "someone@example.com", "")
		}, "someone@example.com is not an approver"},
		{"duration over the maximum", func() error { return x.request("req-long", "prod", requester, 2*time.Hour, "long") }, "over the maximum 1h0m0s"},
		{"unknown target", func() error { return x.request("req-nt", "staging", requester, time.Minute, "x") }, `unknown target "staging"`},
		{"unknown login", func() error { return x.request("req-nl", "prod", "ghost@example.com", time.Minute, "x") }, `unknown login "ghost@example.com"`},
		{"group missing from the policy", func() error { return x.request("req-ng", "missing-group", requester, time.Minute, "x") }, `group "group:missing" is not in the tailnet policy`},
		{"reason required", func() error { return x.request("req-nr", "prod", requester, time.Minute, "") }, "requires a reason"},
		{"malformed duration", func() error {
			return x.admin.Create(context.Background(), mustUnstructured(`{"apiVersion":"access.tsymbiote.dhouti.dev/v1alpha1","kind":"AccessRequest","metadata":{"name":"req-bad"},"spec":{"target":"prod","requester":"requester@example.com","duration":"soon"}}`))
		}, `invalid duration "soon"`},
		{"malformed requester", func() error { return x.request("req-bad2", "prod", "not a login", time.Minute, "x") }, "spec.requester"},
	}
	for _, c := range cases {
		err := c.do()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
			continue
		}
		t.Logf("REFUSED %-30s %v", c.name+":", err)
	}
	if x.policy() != before {
		t.Errorf("a refused request changed the policy")
	}
	if ar := x.get("req-self"); ar.Status.Phase != accessv1.PhasePending || ar.Spec.Decision != nil {
		t.Errorf("req-self after refused decisions: phase %s, decision %+v", ar.Status.Phase, ar.Spec.Decision)
	}
}
