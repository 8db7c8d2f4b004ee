package webhook_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	podwebhook "tsymbiote.dhouti.dev/operator/internal/webhook"
	"tsymbiote.dhouti.dev/proto/contract"
)

// TestHandlerDecisions calls the handler directly, without an API server,
// for each decision it can take, and checks the pod its patch produces.
func TestHandlerDecisions(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cfg := &sidecar.Config{Image: "tsymbiote/adapter:unit", AllowedTag: contract.TagWebUI}
	h := podwebhook.NewPodInjector(cfg, admission.NewDecoder(scheme))
	on := map[string]string{contract.LabelSecretInjection: contract.InjectionEnabled}
	pod := func(name, generateName string, labels map[string]string, containers ...string) []byte {
		p := &corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: name, GenerateName: generateName, Namespace: "ns", Labels: labels},
		}
		for _, c := range containers {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: c})
		}
		raw, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	for _, tc := range []struct {
		name string
		op   admissionv1.Operation
		raw  []byte
		// wantAllowed and wantCode describe the response; wantPatched
		// whether it changes the pod; wantName the patched pod's name
		// prefix.
		wantAllowed bool
		wantCode    int32
		wantPatched bool
		wantName    string
	}{
		{"labelled pod is injected", admissionv1.Create, pod("web-1", "", on, "app"), true, http.StatusOK, true, "web-1"},
		{"generateName gets its name now", admissionv1.Create, pod("", "gen-", on, "app"), true, http.StatusOK, true, "gen-"},
		{"unlabelled pod is left alone", admissionv1.Create, pod("web-1", "", nil, "app"), true, http.StatusOK, false, ""},
		{"label with another value", admissionv1.Create, pod("web-1", "", map[string]string{contract.LabelSecretInjection: "disabled"}, "app"), true, http.StatusOK, false, ""},
		{"already injected", admissionv1.Create, pod("web-1", "", on, "app", sidecar.ContainerName), true, http.StatusOK, false, ""},
		{"update is not mutated", admissionv1.Update, pod("web-1", "", on, "app"), true, http.StatusOK, false, ""},
		{"no name at all", admissionv1.Create, pod("", "", on, "app"), false, http.StatusForbidden, false, ""},
		{"not a pod", admissionv1.Create, []byte(`{"metadata":1}`), false, http.StatusBadRequest, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				UID: "u", Operation: tc.op, Namespace: "ns",
				Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
				Object: runtime.RawExtension{Raw: tc.raw},
			}})
			code := int32(http.StatusOK)
			if res.Result != nil && res.Result.Code != 0 {
				code = res.Result.Code
			}
			if res.Allowed != tc.wantAllowed || code != tc.wantCode || (len(res.Patches) > 0) != tc.wantPatched {
				t.Fatalf("response allowed=%v code=%d patches=%d (%v); want allowed=%v code=%d patched=%v",
					res.Allowed, code, len(res.Patches), res.Result, tc.wantAllowed, tc.wantCode, tc.wantPatched)
			}
			if !tc.wantPatched {
				return
			}
			p := applyPatches(t, tc.raw, res)
			if !strings.HasPrefix(p.Name, tc.wantName) || (tc.wantName == "gen-" && len(p.Name) != len("gen-")+5) {
				t.Errorf("name %q, want %q", p.Name, tc.wantName)
			}
			wantAnn := map[string]string{
				sidecar.AnnotationInjected: sidecar.SecretName(p.Name),
				sidecar.AnnotationHostname: sidecar.Hostname(p.Name),
			}
			for k, v := range wantAnn {
				if p.Annotations[k] != v {
					t.Errorf("annotation %s = %q, want %q", k, p.Annotations[k], v)
				}
			}
			if !slices.Contains(p.Finalizers, sidecar.Finalizer) {
				t.Errorf("finalizers %v", p.Finalizers)
			}
			if len(p.Spec.Containers) != 2 || p.Spec.Containers[1].Name != sidecar.ContainerName || p.Spec.Containers[0].Name != "app" {
				t.Fatalf("containers %+v, want app then the sidecar", p.Spec.Containers)
			}
			sc := p.Spec.Containers[1]
			wantArgs := []string{"--discover-socket", "--hostname=" + sidecar.Hostname(p.Name), "--allowed-tag=" + contract.TagWebUI}
			if sc.Image != cfg.Image || !slices.Equal(sc.Args, wantArgs) || sc.EnvFrom[0].SecretRef.Name != sidecar.SecretName(p.Name) {
				t.Errorf("sidecar %+v", sc)
			}
			if p.Spec.ShareProcessNamespace == nil || !*p.Spec.ShareProcessNamespace {
				t.Error("process namespace not shared")
			}
		})
	}
}

// applyPatches applies the handler's JSON patch to raw and decodes the pod.
func applyPatches(t *testing.T, raw []byte, res admission.Response) *corev1.Pod {
	t.Helper()
	pb, err := json.Marshal(res.Patches)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(pb)
	if err != nil {
		t.Fatal(err)
	}
	out, err := patch.Apply(raw)
	if err != nil {
		t.Fatal(err)
	}
	p := &corev1.Pod{}
	if err := json.Unmarshal(out, p); err != nil {
		t.Fatal(err)
	}
	return p
}
