package webhook_test

import (
	"context"
	"encoding/json"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	podwebhook "tsymbiote.dhouti.dev/operator/internal/webhook"
)

// FuzzPodInjector feeds arbitrary pod JSON to the handler: it must never
// panic, and whenever it patches, applying the patch twice over (the second
// time through the handler again) yields exactly one sidecar.
func FuzzPodInjector(f *testing.F) {
	for _, s := range []string{
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"tsymbiote-secret-injection":"enabled"}},"spec":{"containers":[{"name":"app","image":"x"}]}}`,
		`{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"g-","labels":{"tsymbiote-secret-injection":"enabled"}},"spec":{"containers":[]}}`,
		`{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"tsymbiote-secret-injection":"enabled"}}}`,
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"},"spec":{"containers":[{"name":"tsymbiote-adapter"}]}}`,
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"c","labels":{"tsymbiote-secret-injection":"enabled"},"finalizers":["x"]},"spec":{"shareProcessNamespace":false,"volumes":[{"name":"tsymbiote-adapter-state"}]}}`,
		`{}`, `null`, `[]`, `{"metadata":1}`,
	} {
		f.Add([]byte(s))
	}
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	h := podwebhook.NewPodInjector(&testAdapter, admission.NewDecoder(scheme))
	admit := func(raw []byte) admission.Response {
		return h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID: "u", Operation: admissionv1.Create, Namespace: "ns",
			Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Object: runtime.RawExtension{Raw: raw},
		}})
	}
	apply := func(t *testing.T, raw []byte, res admission.Response) []byte {
		if len(res.Patches) == 0 {
			return raw
		}
		pb, err := json.Marshal(res.Patches)
		if err != nil {
			t.Fatal(err)
		}
		p, err := jsonpatch.DecodePatch(pb)
		if err != nil {
			t.Fatalf("handler produced an invalid patch: %v", err)
		}
		out, err := p.Apply(raw)
		if err != nil {
			t.Fatalf("handler's patch does not apply: %v", err)
		}
		return out
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		res := admit(raw)
		if !res.Allowed || len(res.Patches) == 0 {
			return
		}
		once := apply(t, raw, res)
		twice := apply(t, once, admit(once))
		pod := &corev1.Pod{}
		if err := json.Unmarshal(twice, pod); err != nil {
			t.Fatalf("patched pod does not decode: %v", err)
		}
		n := 0
		for _, c := range pod.Spec.Containers {
			if c.Name == sidecar.ContainerName {
				n++
			}
		}
		if n != 1 || pod.Name == "" {
			t.Fatalf("after two admissions: %d sidecars, name %q", n, pod.Name)
		}
	})
}
