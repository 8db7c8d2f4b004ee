// Package webhook is the mutating admission webhook that injects the
// TSymbiote adapter sidecar into labelled pods.
//
// The MutatingWebhookConfiguration sends only pods that carry the injection
// label in namespaces that carry it too (its namespaceSelector and
// objectSelector); the handler checks the pod label again so that a
// hand-written configuration without selectors cannot inject everything.
package webhook

import (
	"context"
	"encoding/json"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	"tsymbiote.dhouti.dev/proto/contract"
)

// Path is where the webhook is served.
const Path = "/mutate-v1-pod"

// +kubebuilder:webhook:path=/mutate-v1-pod,mutating=true,failurePolicy=ignore,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=adapter.tsymbiote.dhouti.dev,admissionReviewVersions=v1,reinvocationPolicy=Never,timeoutSeconds=10

// PodInjector injects the adapter sidecar into pods on creation.
type PodInjector struct {
	cfg     *sidecar.Config
	decoder admission.Decoder
}

// NewPodInjector returns a handler that injects sidecars configured by cfg.
func NewPodInjector(cfg *sidecar.Config, decoder admission.Decoder) *PodInjector {
	return &PodInjector{cfg: cfg, decoder: decoder}
}

// Handle implements admission.Handler.
func (h *PodInjector) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create {
		return admission.Allowed("only pod creation is mutated")
	}
	pod := &corev1.Pod{}
	if err := h.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if !sidecar.Wants(pod.Labels) {
		return admission.Allowed("pod is not labelled " + contract.LabelSecretInjection + "=" + contract.InjectionEnabled)
	}
	if sidecar.Injected(pod) {
		return admission.Allowed("adapter sidecar already present")
	}
	if pod.Name == "" {
		if pod.GenerateName == "" {
			return admission.Denied("pod has neither metadata.name nor metadata.generateName")
		}
		// The API server generates names after admission, but the sidecar's
		// hostname and Secret are named after the pod, so pick the name
		// now, the same way the API server would.
		pod.Name = names.SimpleNameGenerator.GenerateName(pod.GenerateName)
	}
	sidecar.Inject(pod, h.cfg)
	out, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	log.FromContext(ctx).V(1).Info("injecting adapter sidecar", "namespace", req.Namespace, "pod", pod.Name)
	return admission.PatchResponseFromRaw(req.Object.Raw, out)
}
