package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"tsymbiote.dhouti.dev/operator/internal/setup"
	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	"tsymbiote.dhouti.dev/operator/internal/testenv"
	podwebhook "tsymbiote.dhouti.dev/operator/internal/webhook"
	"tsymbiote.dhouti.dev/proto/contract"
)

var testAdapter = sidecar.Config{
	Image:      "tsymbiote/adapter:test",
	AllowedTag: "tag:tsymbiote-webui",
	Resources: func() corev1.ResourceRequirements {
		rr, err := sidecar.ParseResources("cpu=10m,memory=32Mi", "memory=128Mi")
		if err != nil {
			panic(err)
		}
		return rr
	}(),
}

var labelled = map[string]string{contract.LabelSecretInjection: contract.InjectionEnabled}

// startWebhookOnly runs a manager that serves only the webhook (no
// controllers), wrapping the handler with timing when rec is set.
func startWebhookOnly(t testing.TB, env *testenv.Env, rec *latencies) {
	t.Helper()
	wo := env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(env.Config, setup.ManagerOptions(env.Scheme, ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: wo.LocalServingHost, Port: wo.LocalServingPort, CertDir: wo.LocalServingCertDir,
		}),
	}))
	if err != nil {
		t.Fatal(err)
	}
	var h admission.Handler = podwebhook.NewPodInjector(&testAdapter, admission.NewDecoder(mgr.GetScheme()))
	if rec != nil {
		h = timed{h, rec}
	}
	mgr.GetWebhookServer().Register(podwebhook.Path, &webhook.Admission{Handler: h})
	testenv.StartManaged(t, mgr)
}

func newPod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "tailscale", Image: "tailscale/tailscale:test",
		}}},
	}
}

func containerNames(p *corev1.Pod) []string {
	var n []string
	for _, c := range p.Spec.Containers {
		n = append(n, c.Name)
	}
	return n
}

// TestInjection runs the chart's webhook configuration against the real API
// server: labelled pods in labelled namespaces get the sidecar once; every
// other combination is left alone.
func TestInjection(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Webhook: true})
	startWebhookOnly(t, env, nil)
	ctx := context.Background()
	c := env.Client
	on := env.Namespace(t, "inject", labelled)
	off := env.Namespace(t, "plain", nil)

	t.Run("labelled pod is injected", func(t *testing.T) {
		pod := newPod(on, "web-1", labelled)
		start := time.Now()
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		t.Logf("create with injection took %v", time.Since(start).Round(time.Microsecond))
		checkInjected(t, pod, "web-1")
		// The stored object, not just the response, has it.
		got := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), got); err != nil {
			t.Fatal(err)
		}
		checkInjected(t, got, "web-1")
	})

	t.Run("generateName pod gets its name at admission", func(t *testing.T) {
		pod := newPod(on, "", labelled)
		pod.GenerateName = "gen-"
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(pod.Name, "gen-") || len(pod.Name) != len("gen-")+5 {
			t.Fatalf("name %q, want gen-XXXXX", pod.Name)
		}
		checkInjected(t, pod, pod.Name)
	})

	t.Run("Tailscale operator proxy pod keeps its own spec", func(t *testing.T) {
		// Shaped like a proxy pod of the Tailscale operator whose ProxyClass
		// adds the injection label: the operator's containers, init
		// container, volumes and security settings must come through as
		// they were, with the sidecar only appended.
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: on, GenerateName: "ts-web-abc12-", Labels: map[string]string{
				contract.LabelSecretInjection: contract.InjectionEnabled, "tailscale.com/managed": "true",
				"tailscale.com/parent-resource": "web", "tailscale.com/parent-resource-type": "svc",
			}},
			Spec: corev1.PodSpec{
				ServiceAccountName: "proxies",
				InitContainers: []corev1.Container{{Name: "sysctler", Image: "tailscale/tailscale:test",
					Command: []string{"/bin/sh", "-c"}, Args: []string{"sysctl -w net.ipv4.ip_forward=1"},
					SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}},
				Containers: []corev1.Container{{Name: "tailscale", Image: "tailscale/tailscale:test",
					Env: []corev1.EnvVar{{Name: "TS_USERSPACE", Value: "false"}, {Name: "TS_KUBE_SECRET", Value: "ts-web-abc12-0"},
						{Name: "TS_SOCKET", Value: "/tmp/tailscaled.sock"}},
					SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}},
					VolumeMounts:    []corev1.VolumeMount{{Name: "tailscaledconfig-0", MountPath: "/etc/tsconfig/web", ReadOnly: true}}}},
				Volumes: []corev1.Volume{{Name: "tailscaledconfig-0", VolumeSource: corev1.VolumeSource{
					Secret: &corev1.SecretVolumeSource{SecretName: "ts-web-abc12-0-config"}}}},
			},
		}
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		checkInjected(t, pod, pod.Name)
		stored := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), stored); err != nil {
			t.Fatal(err)
		}
		ts := stored.Spec.Containers[0]
		if ts.Name != "tailscale" || len(ts.Env) != 3 || ts.Env[2].Value != "/tmp/tailscaled.sock" ||
			!slices.Contains(ts.SecurityContext.Capabilities.Add, "NET_ADMIN") || len(ts.VolumeMounts) != 1 {
			t.Errorf("tailscale container changed: %+v", ts)
		}
		if len(stored.Spec.InitContainers) != 1 || !*stored.Spec.InitContainers[0].SecurityContext.Privileged {
			t.Errorf("init containers changed: %+v", stored.Spec.InitContainers)
		}
		if stored.Spec.ServiceAccountName != "proxies" || stored.Spec.Volumes[0].Name != "tailscaledconfig-0" {
			t.Errorf("pod spec changed: sa %q volumes %+v", stored.Spec.ServiceAccountName, stored.Spec.Volumes)
		}
		for k, v := range pod.Labels {
			if stored.Labels[k] != v {
				t.Errorf("label %s changed", k)
			}
		}
	})

	t.Run("re-admission does not inject twice", func(t *testing.T) {
		first := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: on, Name: "web-1"}, first); err != nil {
			t.Fatal(err)
		}
		again := newPod(on, "web-1-again", labelled)
		again.Annotations = first.Annotations
		again.Spec = *first.Spec.DeepCopy()
		if err := c.Create(ctx, again); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, name := range containerNames(again) {
			if name == sidecar.ContainerName {
				n++
			}
		}
		if n != 1 || len(again.Spec.Containers) != 2 {
			t.Fatalf("containers after re-admission: %v", containerNames(again))
		}
		if len(again.Spec.Volumes) != len(first.Spec.Volumes) {
			t.Fatalf("volumes grew on re-admission: %d -> %d", len(first.Spec.Volumes), len(again.Spec.Volumes))
		}
	})

	for _, tc := range []struct {
		name, ns string
		labels   map[string]string
	}{
		{"unlabelled pod in labelled namespace", on, nil},
		{"pod labelled disabled", on, map[string]string{contract.LabelSecretInjection: "disabled"}},
		{"labelled pod in unlabelled namespace", off, labelled},
	} {
		t.Run(tc.name+" is untouched", func(t *testing.T) {
			pod := newPod(tc.ns, "", tc.labels)
			pod.GenerateName = "untouched-"
			want := pod.Spec.DeepCopy()
			if err := c.Create(ctx, pod); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(containerNames(pod), []string{"tailscale"}) || pod.Spec.ShareProcessNamespace != nil ||
				len(pod.Finalizers) != 0 || pod.Annotations[sidecar.AnnotationInjected] != "" || len(pod.Spec.Volumes) != len(want.Volumes) {
				t.Fatalf("pod was changed: containers %v, finalizers %v, annotations %v", containerNames(pod), pod.Finalizers, pod.Annotations)
			}
		})
	}
}

func checkInjected(t *testing.T, pod *corev1.Pod, name string) {
	t.Helper()
	if !slices.Equal(containerNames(pod), []string{"tailscale", sidecar.ContainerName}) {
		t.Fatalf("containers %v, want tailscale + %s", containerNames(pod), sidecar.ContainerName)
	}
	sc := pod.Spec.Containers[1]
	if pod.Spec.ShareProcessNamespace == nil || !*pod.Spec.ShareProcessNamespace {
		t.Error("shareProcessNamespace not set")
	}
	if sc.SecurityContext == nil || sc.SecurityContext.Capabilities == nil || !slices.Contains(sc.SecurityContext.Capabilities.Add, "SYS_PTRACE") {
		t.Errorf("sidecar lacks SYS_PTRACE: %+v", sc.SecurityContext)
	}
	wantArgs := []string{"--discover-socket", "--hostname=" + name, "--allowed-tag=tag:tsymbiote-webui"}
	if !slices.Equal(sc.Args, wantArgs) {
		t.Errorf("args %q, want %q", sc.Args, wantArgs)
	}
	if sc.Image != testAdapter.Image {
		t.Errorf("image %q", sc.Image)
	}
	if got := sc.Resources.Requests.Cpu().String(); got != "10m" {
		t.Errorf("cpu request %s, want 10m", got)
	}
	if got := sc.Resources.Limits.Memory().String(); got != "128Mi" {
		t.Errorf("memory limit %s, want 128Mi", got)
	}
	secret := sidecar.SecretName(name)
	if len(sc.EnvFrom) != 1 || sc.EnvFrom[0].SecretRef == nil || sc.EnvFrom[0].SecretRef.Name != secret {
		t.Errorf("envFrom %+v, want secret %s", sc.EnvFrom, secret)
	}
	if pod.Annotations[sidecar.AnnotationInjected] != secret || pod.Annotations[sidecar.AnnotationHostname] != name {
		t.Errorf("annotations %v", pod.Annotations)
	}
	if !slices.Contains(pod.Finalizers, sidecar.Finalizer) {
		t.Errorf("finalizers %v, want %s", pod.Finalizers, sidecar.Finalizer)
	}
}

// TestFailurePolicyIgnore shows the chart's default: with the webhook server
// down, labelled pods are still created, without the sidecar.
func TestFailurePolicyIgnore(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Webhook: true})
	// No webhook server is started.
	on := env.Namespace(t, "inject", labelled)
	pod := newPod(on, "web", labelled)
	if err := env.Client.Create(context.Background(), pod); err != nil {
		t.Fatalf("create with the webhook down: %v", err)
	}
	if !slices.Equal(containerNames(pod), []string{"tailscale"}) {
		t.Fatalf("containers %v", containerNames(pod))
	}

	t.Run("Fail refuses instead", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Webhook: true, FailurePolicy: "Fail"})
		on := env.Namespace(t, "inject", labelled)
		err := env.Client.Create(context.Background(), newPod(on, "web", labelled))
		if err == nil || !strings.Contains(err.Error(), "adapter.tsymbiote.dhouti.dev") {
			t.Fatalf("create with the webhook down and failurePolicy Fail = %v, want a webhook error", err)
		}
		t.Logf("refused: %v", err)
	})
}

// latencies records handler durations.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s))*p+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

type timed struct {
	h   admission.Handler
	rec *latencies
}

func (t timed) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	res := t.h.Handle(ctx, req)
	t.rec.add(time.Since(start))
	return res
}

// admissions is the sample size the latency figures are computed over.
const admissions = 1000

// BenchmarkWebhookInHandler measures the handler alone (decode, inject,
// JSON patch) over 1,000 admissions of a realistic pod per iteration, and
// reports p50 and p99 of the in-handler latency.
func BenchmarkWebhookInHandler(b *testing.B) {
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	h := podwebhook.NewPodInjector(&testAdapter, admission.NewDecoder(scheme))
	reqs := make([]admission.Request, admissions)
	for i := range reqs {
		pod := newPod("bench", fmt.Sprintf("web-%d", i), labelled)
		pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "TS_USERSPACE", Value: "false"}, {Name: "TS_KUBE_SECRET", Value: "ts-state"}}
		pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
		raw, _ := json.Marshal(pod)
		reqs[i] = admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID: "x", Operation: admissionv1.Create, Namespace: "bench",
			Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Object: runtime.RawExtension{Raw: raw},
		}}
	}
	rec := &latencies{}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		for _, r := range reqs {
			start := time.Now()
			res := h.Handle(ctx, r)
			rec.add(time.Since(start))
			if !res.Allowed || len(res.Patches) == 0 {
				b.Fatalf("not injected: %+v", res.Result)
			}
		}
	}
	b.StopTimer()
	reportLatency(b, "handler", rec)
}

// BenchmarkWebhookThroughAPIServer sends 1,000 labelled pod creations
// (server-side dry run, so nothing is stored) through the real API server
// to the webhook, and reports the in-handler p99 as the server sees it and
// the whole create's p99 as the client sees it.
func BenchmarkWebhookThroughAPIServer(b *testing.B) {
	env := testenv.Start(b, testenv.Options{Webhook: true})
	rec := &latencies{}
	startWebhookOnly(b, env, rec)
	ns := env.Namespace(b, "bench", labelled)
	ctx := context.Background()
	creates := &latencies{}
	b.ResetTimer()
	for b.Loop() {
		for i := range admissions {
			pod := newPod(ns, fmt.Sprintf("web-%d", i), labelled)
			start := time.Now()
			if err := env.Client.Create(ctx, pod, client.DryRunAll); err != nil {
				b.Fatal(err)
			}
			creates.add(time.Since(start))
			if len(pod.Spec.Containers) != 2 {
				b.Fatalf("pod %d not injected", i)
			}
		}
	}
	b.StopTimer()
	reportLatency(b, "handler", rec)
	reportLatency(b, "create", creates)
}

func reportLatency(b *testing.B, what string, l *latencies) {
	p50, p99 := l.percentile(0.50), l.percentile(0.99)
	b.ReportMetric(float64(p50.Microseconds())/1000, what+"-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, what+"-p99-ms")
	b.ReportMetric(float64(len(l.d)), what+"-samples")
	note := ""
	if what == "handler" {
		note = " (target p99 < 20ms)"
	}
	b.Logf("%s latency over %d admissions: p50 %v, p99 %v%s", what, len(l.d), p50, p99, note)
}
