package sidecar

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("a", 250)
	for _, tc := range []struct{ pod, secret, host string }{
		{"web-1", "web-1-tsymbiote-adapter", "web-1"},
		{"web.example-0", "web.example-0-tsymbiote-adapter", "web-example-0"},
	} {
		if got := SecretName(tc.pod); got != tc.secret {
			t.Errorf("SecretName(%q) = %q, want %q", tc.pod, got, tc.secret)
		}
		if got := Hostname(tc.pod); got != tc.host {
			t.Errorf("Hostname(%q) = %q, want %q", tc.pod, got, tc.host)
		}
	}
	if s := SecretName(long); len(validation.IsDNS1123Subdomain(s)) != 0 || s == SecretName(long+"b") {
		t.Errorf("SecretName(long) = %q: invalid or not unique", s)
	}
	if h := Hostname(long); len(validation.IsDNS1123Label(h)) != 0 || h == Hostname(long+"b") {
		t.Errorf("Hostname(long) = %q: invalid or not unique", h)
	}
}

func TestInjectIdempotent(t *testing.T) {
	cfg := &Config{Image: "img"}
	pod := &corev1.Pod{}
	pod.Name = "p"
	pod.Spec.Containers = []corev1.Container{{Name: "app"}}
	if !Inject(pod, cfg) {
		t.Fatal("first Inject changed nothing")
	}
	before := pod.DeepCopy()
	if Inject(pod, cfg) {
		t.Fatal("second Inject changed the pod")
	}
	if len(pod.Spec.Containers) != 2 || len(pod.Spec.Volumes) != len(before.Spec.Volumes) || len(pod.Finalizers) != 1 {
		t.Fatalf("pod after two injections: %+v", pod.Spec)
	}
}

func TestParseResources(t *testing.T) {
	rr, err := ParseResources("cpu=10m, memory=32Mi", "memory=128Mi")
	if err != nil {
		t.Fatal(err)
	}
	if rr.Requests.Cpu().String() != "10m" || rr.Requests.Memory().String() != "32Mi" || rr.Limits.Memory().String() != "128Mi" {
		t.Fatalf("got %+v", rr)
	}
	for _, bad := range []string{"cpu", "cpu=", "gpu=1", "cpu=lots", "cpu=1,cpu=2"} {
		_, err := ParseResources(bad, "")
		if err == nil || !strings.Contains(err.Error(), "--adapter-requests") {
			t.Errorf("ParseResources(%q) = %v, want an error naming --adapter-requests", bad, err)
		}
	}
}

func FuzzParseResources(f *testing.F) {
	for _, s := range []string{"", "cpu=10m", "cpu=10m,memory=32Mi", "memory=1e3", "ephemeral-storage=1Gi", "=,", "cpu==1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rr, err := ParseResources(s, s)
		if err != nil {
			return
		}
		for k := range rr.Requests {
			if k != corev1.ResourceCPU && k != corev1.ResourceMemory && k != corev1.ResourceEphemeralStorage {
				t.Fatalf("accepted resource %q", k)
			}
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "--adapter-image"},
		{Config{Image: "i", ImagePullPolicy: "Sometimes"}, "--adapter-image-pull-policy"},
		{Config{Image: "i", AllowedTag: "webui"}, "--adapter-allowed-tag"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	if err := (&Config{Image: "i", AllowedTag: "tag:x", ImagePullPolicy: corev1.PullNever}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestEnv(t *testing.T) {
	env, err := ParseEnv([]string{"TS_DEBUG_USE_DERP_HTTP=1", "EMPTY=", "WITH_EQUALS=a=b"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Image: "i", Env: env}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := Container(cfg, "h", "s")
	var got []string
	for _, e := range c.Env {
		got = append(got, e.Name+"="+e.Value)
	}
	if want := "XDG_CONFIG_HOME=" + stateDir + " TS_DEBUG_USE_DERP_HTTP=1 EMPTY= WITH_EQUALS=a=b"; strings.Join(got, " ") != want {
		t.Errorf("sidecar env %q, want %q", got, want)
	}
	for _, tc := range []struct {
		pairs []string
		want  string
	}{
		{[]string{"NOVALUE"}, "NAME=VALUE"},
		{[]string{"=x"}, "NAME=VALUE"},
		{[]string{"1X=y"}, "NAME=VALUE"},
		{[]string{"A=1", "A=2"}, "given twice"},
	} {
		if _, err := ParseEnv(tc.pairs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseEnv(%q) = %v, want an error saying %q", tc.pairs, err, tc.want)
		}
	}
	for _, name := range []string{"XDG_CONFIG_HOME", SecretKeyAuthKey, SecretKeyControlURL} {
		cfg := &Config{Image: "i", Env: []corev1.EnvVar{{Name: name, Value: "x"}}}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--adapter-env "+name) {
			t.Errorf("Validate with %s in --adapter-env = %v, want it refused", name, err)
		}
	}
}

// TestSecurityContext: the sidecar writes only to its state volume and
// gains no privilege beyond SYS_PTRACE, which it needs for /proc/<pid>/root;
// it runs as root whatever the pod's securityContext asks of containers.
func TestSecurityContext(t *testing.T) {
	sc := Container(&Config{Image: "i"}, "h", "s").SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.RunAsNonRoot == nil || *sc.RunAsNonRoot ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || len(sc.Capabilities.Add) != 1 || sc.Capabilities.Add[0] != "SYS_PTRACE" {
		t.Errorf("sidecar security context %+v", sc)
	}
}
