package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"tailscale.com/types/logger"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
	"tsymbiote.dhouti.dev/operator/internal/certs"
	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	"tsymbiote.dhouti.dev/operator/internal/testenv"
	"tsymbiote.dhouti.dev/proto/contract"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

const (
	ns      = "tsymbiote-system"
	release = "tsymbiote-operator"
)

// TestOperatorBinary installs the chart's objects for real, then runs the
// built operator binary as the chart's ServiceAccount (so only the chart's
// RBAC lets it do anything) against the real API server and Headscale: it
// generates its serving certificate and sets the webhook's caBundle, takes
// the leader lease, answers its probes and metrics, gives an injected pod
// its key Secret and turns a TSymbiote into a StatefulSet.
func TestOperatorBinary(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, hs := f.env.Client, f.hs
	op := f.startOperator(t, "")
	metrics, probes, ports, out := op.metrics, op.probes, op.ports, op.out
	t.Logf("operator ready %v after start", op.ready.Round(time.Millisecond))
	if err := httpOK("http://" + probes + "/healthz"); err != nil {
		t.Error(err)
	}

	// Serving certificate: kept in a Secret, its CA in the webhook's caBundle.
	secret := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: release + "-webhook-cert"}, secret); err != nil {
		t.Fatalf("cert secret: %v", err)
	}
	block, _ := pem.Decode(secret.Data[certs.KeyCert])
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("serving certificate for %v, valid until %s", cert.DNSNames, cert.NotAfter.Format(time.DateOnly))
	testenv.Eventually(t, 30*time.Second, "caBundle", func() error {
		wh := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := c.Get(ctx, client.ObjectKey{Name: release}, wh); err != nil {
			return err
		}
		if !bytes.Equal(wh.Webhooks[0].ClientConfig.CABundle, secret.Data[certs.KeyCA]) {
			return fmt.Errorf("caBundle not set")
		}
		return nil
	})
	// The webhook server serves that certificate, verifiable with the CA
	// under the Service's name, as the API server will check it.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(secret.Data[certs.KeyCA])
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[2]), &tls.Config{
		RootCAs: pool, ServerName: release + "-webhook." + ns + ".svc",
	})
	if err != nil {
		t.Fatalf("TLS to the webhook server with the generated CA: %v", err)
	}
	conn.Close()
	lease := &coordinationv1.Lease{}
	testenv.Eventually(t, 30*time.Second, "leader lease", func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tsymbiote-operator.tsymbiote.dhouti.dev"}, lease)
	})
	t.Logf("leader: %s", *lease.Spec.HolderIdentity)
	res, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), `controller_runtime_reconcile_total{controller="podkey"`) {
		t.Errorf("metrics lack the podkey controller's counters")
	}
	defer func() {
		// By the end one key was minted; that pod's adapter never joined, so
		// no adapter node was deleted.
		body := httpBody(t, "http://"+metrics+"/metrics")
		for _, want := range []string{
			`tsymbiote_operator_adapter_keys_minted_total{reason="new"} 1`,
			`tsymbiote_operator_adapter_nodes_deleted_total 0`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	}()

	// An injected pod (created here already injected: the API server cannot
	// reach this binary's webhook under its service name) gets its Secret.
	podNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "app-",
		Labels: map[string]string{contract.LabelSecretInjection: contract.InjectionEnabled}}}
	if err := c.Create(ctx, podNS); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: podNS.Name, Name: "web-0",
			Labels: map[string]string{contract.LabelSecretInjection: contract.InjectionEnabled}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	sidecar.Inject(pod, &sidecar.Config{Image: "tsymbiote/adapter:test"})
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "pod key secret", func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: podNS.Name, Name: sidecar.SecretName("web-0")}, &corev1.Secret{})
	})
	// Deleting it needs the finalizer released, which the chart's RBAC
	// must allow.
	if err := c.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "pod released", func() error {
		err := c.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return testenv.NotYet("pod still there (%v)", err)
	})

	// A TSymbiote becomes a StatefulSet.
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: podNS.Name, Name: "webui-auth"},
		StringData: map[string]string{"HEADSCALE_URL": hs.URL, "HEADSCALE_API_KEY": "x"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &v1alpha1.TSymbiote{
		ObjectMeta: metav1.ObjectMeta{Namespace: podNS.Name, Name: "tsymbiote"},
		Spec:       v1alpha1.TSymbioteSpec{AuthSecretRef: corev1.LocalObjectReference{Name: "webui-auth"}, Image: "tsymbiote/webui:test"},
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "webui statefulset", func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: podNS.Name, Name: "tsymbiote"}, &appsv1.StatefulSet{})
	})
	testenv.Eventually(t, 30*time.Second, "TSymbiote status", func() error {
		ts := &v1alpha1.TSymbiote{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: podNS.Name, Name: "tsymbiote"}, ts); err != nil {
			return err
		}
		if len(ts.Status.Conditions) == 0 || ts.Status.ObservedGeneration != ts.Generation {
			return testenv.NotYet("status %+v", ts.Status)
		}
		return nil
	})
	// Deleting the TSymbiote removes its WebUI's node from the tailnet.
	_, st := hs.NewNode(t, headscaletest.NodeOptions{Hostname: "tsymbiote", Tags: []string{headscaletest.TagWebUI}, Ephemeral: true})
	t.Logf("stand-in WebUI node %s joined", st.Self.ID)
	if err := c.Delete(ctx, &v1alpha1.TSymbiote{ObjectMeta: metav1.ObjectMeta{Namespace: podNS.Name, Name: "tsymbiote"}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "WebUI node deleted", func() error {
		devs, err := f.cp.ListDevices(ctx, controlplane.ListOptions{Tag: headscaletest.TagWebUI})
		if err == nil && len(devs) > 0 {
			return testenv.NotYet("%d webui nodes left", len(devs))
		}
		return err
	})
	testenv.Eventually(t, 30*time.Second, "TSymbiote gone", func() error {
		err := c.Get(ctx, client.ObjectKey{Namespace: podNS.Name, Name: "tsymbiote"}, &v1alpha1.TSymbiote{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return testenv.NotYet("still there (%v)", err)
	})
	if strings.Contains(out.String(), hs.APIKey) {
		t.Error("the operator logged the Headscale API key")
	}
	if n := strings.Count(out.String(), `"level":"error"`); n > 0 {
		t.Errorf("%d error lines in the operator's log", n)
	}
}

// fixture is a real API server with the chart installed, a kubeconfig of
// the chart's ServiceAccount, a Headscale and the built operator binary.
type fixture struct {
	bin, kubeconfig string
	env             *testenv.Env
	hs              *headscaletest.Server
	cp              controlplane.Client // a client of hs
}

// TestMain removes the operator binary the tests built.
func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

func newFixture(t *testing.T) *fixture {
	t.Helper()
	hs := headscaletest.Start(t, headscaletest.Options{})
	cp, err := controlplane.New(logger.Discard, controlplane.Config{HeadscaleURL: hs.URL, HeadscaleAPIKey: controlplane.Secret(hs.APIKey)})
	if err != nil {
		t.Fatal(err)
	}
	bin := testkit.BuildOnce(t, "tsymbiote.dhouti.dev/operator/cmd/tsymbiote-operator")
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for _, u := range decodeAll(t, testenv.Helm(t, "template", release, testenv.ChartDir(t), "-n", ns)) {
		if err := c.Patch(ctx, u, client.Apply, client.ForceOwnership, client.FieldOwner("helm")); err != nil {
			t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	// Act as the chart's ServiceAccount.
	user, err := env.ControlPlane.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + ns + ":" + release,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return &fixture{bin: bin, kubeconfig: kcPath, env: env, hs: hs, cp: cp}
}

// operatorProc is a running operator binary.
type operatorProc struct {
	proc            *testkit.Process
	out             *testkit.Buffer // all its output, for the checks on it
	metrics, probes string
	ports           []int
	dir             string
	ready           time.Duration
	stopped         bool
}

// startOperator runs the binary with the chart's arguments (ports on
// loopback) and waits for /readyz. It is stopped when the test ends.
func (f *fixture) startOperator(t *testing.T, name string) *operatorProc {
	t.Helper()
	ports, err := testkit.FreePorts("127.0.0.1", 3)
	if err != nil {
		t.Fatal(err)
	}
	p := &operatorProc{out: &testkit.Buffer{}, dir: t.TempDir(), ports: ports}
	p.metrics, p.probes = fmt.Sprintf("127.0.0.1:%d", p.ports[0]), fmt.Sprintf("127.0.0.1:%d", p.ports[1])
	cmd := exec.Command(f.bin,
		"--kubeconfig="+f.kubeconfig,
		"--namespace="+ns,
		"--leader-elect",
		"--metrics-bind-address="+p.metrics,
		"--health-probe-bind-address="+p.probes,
		fmt.Sprintf("--webhook-port=%d", p.ports[2]),
		"--cert-dir="+filepath.Join(p.dir, "certs"),
		"--cert-secret-name="+release+"-webhook-cert",
		"--webhook-service-name="+release+"-webhook",
		"--webhook-config-name="+release,
		"--adapter-image=tsymbiote/adapter:test",
		"--zap-encoder=json",
	)
	cmd.Env = append(os.Environ(), f.hs.Env()...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	start := time.Now()
	if p.proc, err = testkit.Launch(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("operator %s output:\n%s", name, p.out.String())
		}
	})
	testenv.Eventually(t, 60*time.Second, "readyz", func() error {
		select {
		case <-p.proc.Done():
			t.Fatalf("operator exited: %v\n%s", p.proc.Err(), p.out.String())
		default:
		}
		return httpOK("http://" + p.probes + "/readyz")
	})
	p.ready = time.Since(start)
	return p
}

// stop sends SIGTERM and waits for the process to exit.
func (p *operatorProc) stop(t *testing.T) {
	if p.stopped {
		return
	}
	p.stopped = true
	start := time.Now()
	err := p.proc.Stop(15 * time.Second)
	t.Logf("operator exited after SIGTERM: %v", err)
	if time.Since(start) >= 15*time.Second {
		t.Error("operator did not exit within 15s of SIGTERM")
	}
}

func (p *operatorProc) leads() bool {
	return strings.Contains(p.out.String(), "successfully acquired lease")
}

// TestLeaderElection runs two replicas: both serve (ready), one leads; when
// the leader stops, it releases the lease and the other takes over and
// reconciles.
func TestLeaderElection(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := f.env.Client
	a := f.startOperator(t, "a")
	testenv.Eventually(t, 30*time.Second, "a leads", func() error {
		if !a.leads() {
			return testenv.NotYet("a has not acquired the lease")
		}
		return nil
	})
	b := f.startOperator(t, "b")
	time.Sleep(3 * time.Second) // more than the 2s retry period
	if b.leads() {
		t.Fatal("both replicas lead")
	}
	start := time.Now()
	a.stop(t)
	testenv.Eventually(t, 30*time.Second, "b leads", func() error {
		if !b.leads() {
			return testenv.NotYet("b has not acquired the lease")
		}
		return nil
	})
	t.Logf("b took over %v after a was stopped", time.Since(start).Round(time.Millisecond))

	podNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "app-",
		Labels: map[string]string{contract.LabelSecretInjection: contract.InjectionEnabled}}}
	if err := c.Create(ctx, podNS); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: podNS.Name, Name: "web-0",
			Labels: map[string]string{contract.LabelSecretInjection: contract.InjectionEnabled}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	sidecar.Inject(pod, &sidecar.Config{Image: "tsymbiote/adapter:test"})
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the new leader reconciles", func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: podNS.Name, Name: sidecar.SecretName("web-0")}, &corev1.Secret{})
	})
}

func httpBody(t *testing.T, url string) string {
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

func httpOK(url string) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, res.Status)
	}
	return nil
}

func decodeAll(t *testing.T, s string) []*unstructured.Unstructured {
	t.Helper()
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(s), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := d.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("decoding helm output: %v", err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}
