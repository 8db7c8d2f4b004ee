package accesse2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"tailscale.com/types/logger"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/setup"
	"tsymbiote.dhouti.dev/operator/internal/testenv"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

func TestMain(m *testing.M) { os.Exit(headscaletest.Main(m)) }

// jitPolicy gives the empty group:prod every port of tag:prod: the usual
// shape of a just-in-time group.
const jitPolicy = `{
  // Granted just in time by the operator.
  "groups": {
    "group:prod": [],
  },
  "acls": [
    {"action": "accept", "src": ["group:prod"], "dst": ["tag:prod:*"]},
  ],
  "tagOwners": {
    "tag:prod": ["` + headscaletest.User + `@"],
  },
}
`

const webUISA = "system:serviceaccount:tsymbiote:tsymbiote-webui"

// env is an API server with the access CRDs and (optionally) webhooks, a
// real Headscale holding jitPolicy, and clients acting as different users.
type env struct {
	t      *testing.T
	env    *envtest.Environment
	cfg    *rest.Config
	admin  client.Client // system:masters, no identity of interest
	webui  client.Client // the WebUI's ServiceAccount: asserts logins
	hs     *headscaletest.Server
	cp     controlplane.Client
	pe     controlplane.PolicyEditor
	userID map[string]string // login -> Headscale user ID
}

func start(t *testing.T, webhooks bool, logins ...string) *env {
	t.Helper()
	logOnce()
	assets := t.TempDir()
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if err := os.Symlink(testkit.Binary(t, name), filepath.Join(assets, name)); err != nil {
			t.Fatal(err)
		}
	}
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	e := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "operator", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                setup.NewScheme(),
	}
	if webhooks {
		e.WebhookInstallOptions = envtest.WebhookInstallOptions{
			Paths:            []string{filepath.Join(root, "operator", "config", "webhook")},
			LocalServingHost: "127.0.0.1",
		}
	}
	cfg, err := e.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	x := &env{t: t, env: e, cfg: cfg, userID: map[string]string{}}
	x.admin = x.clientAs("", nil)
	x.webui = x.clientAs(webUISA, []string{"system:serviceaccounts", "system:masters"})

	x.hs = headscaletest.Start(t, headscaletest.Options{Policy: jitPolicy})
	ctx := context.Background()
	for _, l := range logins {
		id, err := x.hs.CreateUser(ctx, l[:len(l)-len("@example.com")], l)
		if err != nil {
			t.Fatal(err)
		}
		x.userID[l] = id
	}
	x.cp, err = controlplane.New(logger.Discard, controlplane.Config{HeadscaleURL: x.hs.URL, HeadscaleAPIKey: controlplane.Secret(x.hs.APIKey)})
	if err != nil {
		t.Fatal(err)
	}
	x.pe, _ = controlplane.AsPolicyEditor(x.cp)
	return x
}

var logOnceDone = false

func logOnce() {
	if !logOnceDone {
		logOnceDone = true
		logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(false)))
	}
}

// clientAs is a client authenticated as user (admin when empty).
func (x *env) clientAs(user string, groups []string) client.Client {
	cfg := x.cfg
	if user != "" {
		u, err := x.env.ControlPlane.AddUser(envtest.User{Name: user, Groups: append(groups, "system:masters")}, nil)
		if err != nil {
			x.t.Fatal(err)
		}
		cfg = u.Config()
	}
	c, err := client.New(cfg, client.Options{Scheme: x.env.Scheme})
	if err != nil {
		x.t.Fatal(err)
	}
	return c
}

// manager runs the operator's access controllers (and webhooks) in the
// test process until the test ends.
func (x *env) manager(now func() time.Time) {
	wo := x.env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(x.cfg, setup.ManagerOptions(x.env.Scheme, ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer:          webhook.NewServer(webhook.Options{Host: wo.LocalServingHost, Port: wo.LocalServingPort, CertDir: wo.LocalServingCertDir}),
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	}))
	if err != nil {
		x.t.Fatal(err)
	}
	if err := setup.Setup(mgr, setup.Config{ControlPlane: x.cp, Access: setup.AccessConfig{
		Enabled: true, TrustedAsserter: webUISA, MaxDuration: 24 * time.Hour, Namespace: "tsymbiote", Now: now, Logf: x.t.Logf,
	}}); err != nil {
		x.t.Fatal(err)
	}
	testenv.StartManaged(x.t, mgr)
}

func (x *env) target(name, group string, mut func(*accessv1.AccessTargetSpec)) {
	x.t.Helper()
	t := &accessv1.AccessTarget{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: accessv1.AccessTargetSpec{
		Group: group, Label: "Prod access", MaxDuration: metav1.Duration{Duration: time.Hour},
	}}
	if mut != nil {
		mut(&t.Spec)
	}
	if err := x.admin.Create(context.Background(), t); err != nil {
		x.t.Fatalf("creating target %s: %v", name, err)
	}
}

// request creates a request as the WebUI would.
func (x *env) request(name, target, login string, d time.Duration, reason string) error {
	return x.webui.Create(context.Background(), &accessv1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       accessv1.AccessRequestSpec{Target: target, Requester: login, Duration: metav1.Duration{Duration: d}, Reason: reason},
	})
}

// decide sets the decision with c.
func (x *env) decide(c client.Client, name string, action accessv1.Action, by, reason string) error {
	ctx := context.Background()
	for {
		ar := &accessv1.AccessRequest{}
		if err := c.Get(ctx, types.NamespacedName{Name: name}, ar); err != nil {
			return err
		}
		ar.Spec.Decision = &accessv1.Decision{Action: action, By: by, Reason: reason}
		err := c.Update(ctx, ar)
		if err != nil && isConflict(err) {
			continue
		}
		return err
	}
}

func (x *env) get(name string) *accessv1.AccessRequest {
	x.t.Helper()
	ar := &accessv1.AccessRequest{}
	if err := x.admin.Get(context.Background(), types.NamespacedName{Name: name}, ar); err != nil {
		x.t.Fatal(err)
	}
	return ar
}

func (x *env) waitPhase(name string, timeout time.Duration, phases ...accessv1.Phase) *accessv1.AccessRequest {
	x.t.Helper()
	var ar *accessv1.AccessRequest
	testenv.Eventually(x.t, timeout, name+" phase", func() error {
		ar = x.get(name)
		if slices.Contains(phases, ar.Status.Phase) {
			return nil
		}
		return fmt.Errorf("phase %q (%s), want %v", ar.Status.Phase, ar.Status.Message, phases)
	})
	return ar
}

// members is the group's members in the control plane's policy now.
func (x *env) members(group string) []string {
	x.t.Helper()
	p, err := x.cp.GetPolicy(context.Background())
	if err != nil {
		x.t.Fatal(err)
	}
	ms, err := controlplane.GroupMembers([]byte(p.Body), group)
	if err != nil {
		x.t.Fatal(err)
	}
	return ms
}

func (x *env) policy() string {
	p, err := x.cp.GetPolicy(context.Background())
	if err != nil {
		x.t.Fatal(err)
	}
	return p.Body
}

func printHistory(t *testing.T, ar *accessv1.AccessRequest) {
	for _, h := range ar.Status.History {
		t.Logf("  %s  %-12s by %-28s %s", h.Time.UTC().Format("15:04:05"), h.Event, h.By, h.Reason)
	}
}

func mustUnstructured(s string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON([]byte(s)); err != nil {
		panic(err)
	}
	return u
}
