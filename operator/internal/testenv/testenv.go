// Package testenv starts the real parts the operator's tests run against: an
// etcd and kube-apiserver (through envtest, from the pinned binaries in
// ./bin), optionally kube-controller-manager for garbage collection, the
// chart's own MutatingWebhookConfiguration pointed at the test process, and
// the operator's manager. Everything it starts is stopped when the test ends.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/yaml"

	"tsymbiote.dhouti.dev/operator/internal/setup"
	"tsymbiote.dhouti.dev/testkit"
)

// Options configure Start.
type Options struct {
	// Webhook installs the chart's MutatingWebhookConfiguration, pointed at
	// a webhook server in the test process.
	Webhook bool
	// FailurePolicy of that configuration; the chart's default when empty.
	FailurePolicy string
}

// Env is a running API server.
type Env struct {
	*envtest.Environment
	Config *rest.Config
	Client client.Client
	Root   string // repository root
}

var logOnce sync.Once

// Start starts etcd and kube-apiserver with the operator's CRD installed.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	logOnce.Do(func() {
		logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	})
	assets := t.TempDir()
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if err := linkAsset(testkit.Binary(t, name), filepath.Join(assets, name)); err != nil {
			t.Fatal(err)
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot(t), "operator", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                setup.NewScheme(),
	}
	if opts.Webhook {
		args := []string{}
		if opts.FailurePolicy != "" {
			args = append(args, "--set", "webhook.failurePolicy="+opts.FailurePolicy)
		}
		out := Helm(t, append([]string{"template", "tsymbiote-operator", ChartDir(t), "-n", "tsymbiote-system",
			"--show-only", "templates/webhook.yaml"}, args...)...)
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := yaml.UnmarshalStrict([]byte(stripComments(out)), cfg); err != nil {
			t.Fatalf("parsing the chart's webhook configuration: %v", err)
		}
		env.WebhookInstallOptions.MutatingWebhooks = []*admissionregistrationv1.MutatingWebhookConfiguration{cfg}
		env.WebhookInstallOptions.LocalServingHost = "127.0.0.1"
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
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Environment: env, Config: cfg, Client: c, Root: repoRoot(t)}
}

// linkAsset puts bin at link for envtest. envtest does not tie its etcd
// and kube-apiserver to the test process, so when setpriv is there the link
// is a wrapper that has the kernel kill the server if the test binary dies
// without cleaning up (a test timeout, say); a symlink otherwise.
func linkAsset(bin, link string) error {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return os.Symlink(bin, link)
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %s --pdeathsig KILL %s \"$@\"\n", setpriv, bin)
	return os.WriteFile(link, []byte(script), 0o755)
}

// zapLevel is info, or debug with TSYMBIOTE_TEST_DEBUG set.
func zapLevel() zapcore.Level {
	if os.Getenv("TSYMBIOTE_TEST_DEBUG") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.InfoLevel
}

// ctrlConfig lets every test start its own manager in one process:
// controller names are otherwise unique per process.
func ctrlConfig() config.Controller {
	return config.Controller{SkipNameValidation: ptr.To(true)}
}

// StartManager runs the operator's manager (webhook server on envtest's
// port, no metrics or probes, no leader election) with cfg until the test
// ends, and waits for its caches.
func (e *Env) StartManager(t testing.TB, cfg setup.Config) manager.Manager {
	t.Helper()
	wo := e.WebhookInstallOptions
	mgr, err := ctrl.NewManager(e.Config, setup.ManagerOptions(e.Scheme, ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: wo.LocalServingHost, Port: wo.LocalServingPort, CertDir: wo.LocalServingCertDir,
		}),
		Controller: ctrlConfig(),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := setup.Setup(mgr, cfg); err != nil {
		t.Fatal(err)
	}
	StartManaged(t, mgr)
	return mgr
}

// StartManaged starts mgr until the test ends and waits for its caches
// (and webhook server, if any) to be ready.
func StartManaged(t testing.TB, mgr manager.Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if !mgr.GetCache().WaitForCacheSync(wctx) {
		t.Fatal("manager caches never synced")
	}
	check := mgr.GetWebhookServer().StartedChecker()
	Eventually(t, 30*time.Second, "webhook server", func() error { return check(nil) })
}

// Namespace creates a namespace with labels and returns its name.
func (e *Env) Namespace(t testing.TB, prefix string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: labels}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

// Eventually polls f every 100ms until it returns nil or timeout passes,
// and fails t with f's last error.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// ChartDir is the operator's Helm chart.
func ChartDir(t testing.TB) string {
	return filepath.Join(repoRoot(t), "charts", "tsymbiote-operator")
}

// Helm runs ./bin/helm and returns its standard output. Without it, t
// skips, or fails under CI=true (testkit.Binary).
func Helm(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(testkit.Binary(t, "helm"), args...)
	// Keep Helm away from the user's configuration and caches.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") || strings.TrimSpace(l) == "---" {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// ControllerManager runs kube-controller-manager (./bin, pinned version)
// against e with only the controllers named, until the test ends.
func (e *Env) ControllerManager(t testing.TB, controllers ...string) {
	t.Helper()
	bin := testkit.Binary(t, "kube-controller-manager")
	user, err := e.ControlPlane.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--kubeconfig="+kcPath,
		"--controllers="+strings.Join(controllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--concurrent-gc-syncs=5",
		"--v=1",
	)
	p := testkit.Start(t, cmd)
	select {
	case <-p.Done():
		t.Fatalf("kube-controller-manager exited at start: %v\n%s", p.Err(), p.Output())
	case <-time.After(500 * time.Millisecond):
	}
}

var errNotYet = errors.New("not yet")

// NotYet returns an error for Eventually.
func NotYet(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errNotYet}, args...)...)
}
