package pod

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"tailscale.com/client/local"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	"tsymbiote.dhouti.dev/proto/contract"
)

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"default/web-1", "default/web-1", ""},
		{"kube-system/coredns-5d.x", "kube-system/coredns-5d.x", ""},
		{"web-1", "", "want <namespace>/<pod>"},
		{"/web", "", "namespace \"\""},
		{"default/", "", "name \"\""},
		{"Default/web", "", "namespace \"Default\""},
		{"default/web/1", "", "name \"web/1\""},
		{"default/web_1", "", "name \"web_1\""},
	} {
		r, err := ParseRef(tc.in)
		switch {
		case tc.err == "" && (err != nil || r.String() != tc.want):
			t.Errorf("ParseRef(%q) = %v, %v; want %s", tc.in, r, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), tc.in)):
			t.Errorf("ParseRef(%q) error = %v; want one naming the input and saying %s", tc.in, err, tc.err)
		}
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"default/web-1", "a/b", "/", "", "a/b/c", "x_y/z", strings.Repeat("a", 70) + "/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		if r.String() != s || strings.Contains(r.target(), "/") || strings.Count(r.target(), "_") != 1 {
			t.Fatalf("%q parsed to %+v (target %q)", s, r, r.target())
		}
	})
}

func daemonPod(name, node string, phase corev1.PodPhase, args ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system", UID: types.UID(name),
			Labels: map[string]string{"app.kubernetes.io/name": "tailscale-cni"}},
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: true, Containers: []corev1.Container{
			{Name: "daemon", Command: []string{DaemonBinary}, Args: args}, {Name: "adapter"},
		}},
		Status: corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func appPod(name, node string, mod func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: corev1.PodSpec{NodeName: node}}
	if mod != nil {
		mod(p)
	}
	return p
}

func TestLocate(t *testing.T) {
	cs := fake.NewClientset(
		daemonPod("tscni-old", "n1", corev1.PodPending),
		daemonPod("tscni-a", "n1", corev1.PodRunning, "--socket=/x", "--run-dir=/run/tscni"),
		daemonPod("tscni-b", "n2", corev1.PodRunning),
		appPod("web-1", "n1", nil),
		appPod("web-2", "n2", nil),
		appPod("host", "n1", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		appPod("out", "n1", func(p *corev1.Pod) { p.Annotations = map[string]string{contract.AnnotationCNI: "false"} }),
		appPod("pending", "", nil),
		appPod("lonely", "n3", nil),
	)
	for _, tc := range []struct {
		pod, daemon, socket, err string
	}{
		{pod: "web-1", daemon: "tscni-a", socket: "/run/tscni/pods/default_web-1/tailscaled.sock"},
		{pod: "web-2", daemon: "tscni-b", socket: "/var/run/tailscale-cni/pods/default_web-2/tailscaled.sock"},
		{pod: "nope", err: "pod default/nope not found"},
		{pod: "host", err: "hostNetwork"},
		{pod: "out", err: "opted out"},
		{pod: "pending", err: "not scheduled"},
		{pod: "lonely", err: "no tailscale-cni daemon runs on node n3"},
	} {
		l, err := Locate(context.Background(), cs, Ref{"default", tc.pod})
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v; want %q", tc.pod, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.pod, err)
		case tc.err == "" && (l.Daemon.Name != tc.daemon || l.Socket != tc.socket):
			t.Errorf("%s: daemon %s socket %s; want %s %s", tc.pod, l.Daemon.Name, l.Socket, tc.daemon, tc.socket)
		}
	}
}

func TestRunDirArgs(t *testing.T) {
	if got := RunDir(daemonPod("d", "n", corev1.PodRunning, "--run-dir", "/a")); got != "/a" {
		t.Errorf("RunDir = %q", got)
	}
	if got := RunDir(daemonPod("d", "n", corev1.PodRunning)); got != DefaultRunDir {
		t.Errorf("RunDir = %q", got)
	}
}

func TestRestart(t *testing.T) {
	cs := fake.NewClientset(daemonPod("tscni-a", "n1", corev1.PodRunning))
	// The DaemonSet's part: a new pod once the old one is deleted.
	cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		go func() {
			_, _ = cs.CoreV1().Pods("kube-system").Create(context.Background(), daemonPod("tscni-new", "n1", corev1.PodRunning), metav1.CreateOptions{})
		}()
		return false, nil, nil
	})
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := restart(ctx, cs, &out, "n1", true, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "deleted kube-system/tscni-a on node n1") || !strings.Contains(out.String(), "kube-system/tscni-new is Ready after") {
		t.Errorf("restart printed %q", out.String())
	}
	if _, err := cs.CoreV1().Pods("kube-system").Get(ctx, "tscni-a", metav1.GetOptions{}); err == nil {
		t.Error("the old daemon pod is still there")
	}
	if err := restart(ctx, cs, &out, "n9", true, time.Millisecond); err == nil || !strings.Contains(err.Error(), "node n9") {
		t.Errorf("restart on a node without a daemon: %v", err)
	}
}

// fakePinger answers with the results in order.
type fakePinger struct {
	res []*ipnstate.PingResult
	n   int
}

func (f *fakePinger) PingWithOpts(ctx context.Context, ip netip.Addr, _ tailcfg.PingType, _ local.PingOpts) (*ipnstate.PingResult, error) {
	if f.n >= len(f.res) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.n++
	return f.res[f.n-1], nil
}

func TestPingLoop(t *testing.T) {
	derp := &ipnstate.PingResult{NodeName: "b", NodeIP: "100.64.0.2", LatencySeconds: 0.0123456, DERPRegionID: 999, DERPRegionCode: "local"}
	direct := &ipnstate.PingResult{NodeName: "b", NodeIP: "100.64.0.2", LatencySeconds: 0.000321, Endpoint: "10.0.0.2:41641"}
	tsmp := &ipnstate.PingResult{NodeName: "b", NodeIP: "100.64.0.2", LatencySeconds: 0.004}
	ip := netip.MustParseAddr("100.64.0.2")
	for _, tc := range []struct {
		name        string
		res         []*ipnstate.PingResult
		count       int
		untilDirect bool
		want        []string
		err         string
	}{
		{"direct after DERP", []*ipnstate.PingResult{derp, direct, direct}, 5, true,
			[]string{"pong from b (100.64.0.2) via DERP(local) in 12.35ms", "pong from b (100.64.0.2) via 10.0.0.2:41641 in 321µs"}, ""},
		{"never direct", []*ipnstate.PingResult{derp, derp}, 2, true, nil, "direct connection not established"},
		{"count without until-direct", []*ipnstate.PingResult{direct, direct}, 2, false, nil, ""},
		{"tsmp says its protocol", []*ipnstate.PingResult{tsmp}, 1, false, []string{"pong from b (100.64.0.2) via TSMP in 4ms"}, ""},
		{"no reply", nil, 2, false, []string{`ping "100.64.0.2" timed out`}, "no reply"},
		{"error from the node", []*ipnstate.PingResult{{Err: "no matching peer"}}, 1, false, nil, "no matching peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			pt := tailcfg.PingDisco
			if strings.HasPrefix(tc.name, "tsmp") {
				pt = tailcfg.PingTSMP
			}
			err := pingLoop(context.Background(), &fakePinger{res: tc.res}, &out, ip, pt, tc.count, 20*time.Millisecond, tc.untilDirect, time.Millisecond)
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("error %v; want %q", err, tc.err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output %q lacks %q", out.String(), w)
				}
			}
		})
	}
}

func TestExecConnWhy(t *testing.T) {
	c := &execConn{where: "kube-system/tscni-a"}
	if c.why() != nil {
		t.Error("why() of a clean exec")
	}
	_, _ = c.stderr.Write([]byte("tailscale-cni-daemon pod-socket: no socket at /x: the pod is not attached\n"))
	c.err = errors.New("command terminated with exit code 1")
	if err := c.why(); err == nil || !strings.Contains(err.Error(), "not attached") || !strings.Contains(err.Error(), "exit code 1") {
		t.Errorf("why() = %v", err)
	}
}
