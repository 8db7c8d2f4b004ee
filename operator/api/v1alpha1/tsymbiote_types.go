package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons a TSymbiote reports.
const (
	// ConditionReady is True when the WebUI StatefulSet has a ready replica
	// running the current spec.
	ConditionReady = "Ready"

	ReasonReady             = "Ready"
	ReasonProgressing       = "Progressing"
	ReasonAuthSecretMissing = "AuthSecretMissing"
	ReasonAuthSecretInvalid = "AuthSecretInvalid"
	ReasonProvisionFailed   = "ProvisionFailed"
)

// TSymbioteSpec is the desired WebUI deployment.
type TSymbioteSpec struct {
	// AuthSecretRef names a Secret in the same namespace whose keys become the
	// WebUI's environment: TS_OAUTH_CLIENT_ID and TS_OAUTH_CLIENT_SECRET (or
	// HEADSCALE_URL and HEADSCALE_API_KEY) when generateAuth is true,
	// TS_AUTHKEY otherwise; TS_CONTROL_URL optionally.
	// +required
	AuthSecretRef corev1.LocalObjectReference `json:"authSecretRef"`

	// Image is the WebUI container image.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.contains(' ')",message="spec.image must not contain spaces"
	Image string `json:"image"`

	// ImagePullPolicy of the WebUI container.
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Hostname is the WebUI's static tailnet hostname (--hostname). The
	// resource's name when empty.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Hostname string `json:"hostname,omitempty"`

	// AllowedUsers are the tailnet login names (user@domain), or tags
	// (tag:name) of nodes, allowed to use the WebUI (--allowed-users).
	// Tags admit tagged nodes, which have no user of their own.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=3
	// +kubebuilder:validation:items:MaxLength=320
	// +kubebuilder:validation:items:Pattern=`^([^@\s,]+@[^@\s,]+|tag:[A-Za-z0-9][-A-Za-z0-9]*)$`
	AllowedUsers []string `json:"allowedUsers,omitempty"`

	// GenerateAuth makes the WebUI mint its own auth key with the OAuth
	// client (or Headscale API key) from authSecretRef (--generate-auth).
	// +optional
	// +kubebuilder:default=true
	GenerateAuth *bool `json:"generateAuth,omitempty"`

	// Access turns on the WebUI's Access page and API (just-in-time access
	// requests). The WebUI then reads and writes AccessTargets and
	// AccessRequests with its ServiceAccount, which the operator must trust
	// (the chart's access.webUIServiceAccount) and which needs the chart's
	// WebUI access RBAC.
	// +optional
	Access bool `json:"access,omitempty"`

	// Pod overrides parts of the WebUI pod.
	// +optional
	Pod *PodOverrides `json:"pod,omitempty"`
}

// PodOverrides are the parts of the WebUI pod a TSymbiote may set.
//
// +kubebuilder:validation:XValidation:rule="!has(self.labels) || self.labels.all(k, !k.startsWith('app.kubernetes.io/'))",message="spec.pod.labels must not set app.kubernetes.io/ labels: the operator owns them for the StatefulSet selector",fieldPath=".labels"
type PodOverrides struct {
	// Labels added to the pod.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations added to the pod.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// Resources of the WebUI container.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// Env is added to the WebUI container's environment, after the auth
	// Secret's keys.
	// +optional
	// +listType=map
	// +listMapKey=name
	Env []corev1.EnvVar `json:"env,omitempty"`
	// NodeSelector of the pod.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Tolerations of the pod.
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// Affinity of the pod.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// ServiceAccountName the pod runs as.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// ImagePullSecrets of the pod.
	// +optional
	// +listType=atomic
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	// PriorityClassName of the pod.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
}

// TSymbioteStatus is the observed state of a TSymbiote.
type TSymbioteStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// StatefulSetName is the WebUI StatefulSet.
	// +optional
	StatefulSetName string `json:"statefulSetName,omitempty"`
	// Hostname is the WebUI's tailnet hostname.
	// +optional
	Hostname string `json:"hostname,omitempty"`
	// ReadyReplicas of the WebUI StatefulSet.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// Conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// TSymbiote deploys the TSymbiote WebUI as a StatefulSet.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tsym,categories=tsymbiote
// +kubebuilder:validation:XValidation:rule="has(self.spec.hostname) || (size(self.metadata.name) <= 63 && !self.metadata.name.contains('.'))",message="spec.hostname is required when metadata.name is not a valid hostname (longer than 63 characters or containing dots)",fieldPath=".spec.hostname",reason=FieldValueRequired
// +kubebuilder:printcolumn:name="Hostname",type=string,JSONPath=`.status.hostname`
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.image`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TSymbiote struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec   TSymbioteSpec   `json:"spec"`
	Status TSymbioteStatus `json:"status,omitempty"`
}

// TSymbioteList is a list of TSymbiotes.
//
// +kubebuilder:object:root=true
type TSymbioteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TSymbiote `json:"items"`
}

// EffectiveHostname is the WebUI's tailnet hostname.
func (t *TSymbiote) EffectiveHostname() string {
	if t.Spec.Hostname != "" {
		return t.Spec.Hostname
	}
	return t.Name
}

// GeneratesAuth reports whether the WebUI mints its own auth key.
func (t *TSymbiote) GeneratesAuth() bool {
	return t.Spec.GenerateAuth == nil || *t.Spec.GenerateAuth
}

func init() {
	SchemeBuilder.Register(&TSymbiote{}, &TSymbioteList{})
}
