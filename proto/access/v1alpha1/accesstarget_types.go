package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons of AccessTargets and AccessRequests.
const (
	// ConditionReady is True on an AccessTarget when its group exists in
	// the tailnet policy; on an AccessRequest when its grant is in the policy.
	ConditionReady = "Ready"

	ReasonGroupFound     = "GroupFound"
	ReasonGroupMissing   = "GroupMissing"
	ReasonPolicyError    = "PolicyError"
	ReasonGranted        = "Granted"
	ReasonNotGranted     = "NotGranted"
	ReasonInvalidRequest = "InvalidRequest"
)

// AccessTargetSpec is one tailnet policy group that may be granted for a while.
type AccessTargetSpec struct {
	// Group is the tailnet policy group the requester's login is put in
	// while a grant lasts, e.g. group:prod. It must exist in the policy.
	// +required
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^group:[A-Za-z0-9][-A-Za-z0-9_.]*$`
	Group string `json:"group"`

	// Label is the target's human name, e.g. "Prod SSH access".
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Label string `json:"label,omitempty"`

	// Approvers may approve, deny and revoke requests for this target: a
	// tailnet login (alice@example.com) or policy group (group:sre), as the
	// WebUI asserts from WhoIs, or a Kubernetes user (k8s:user:jane) or
	// group (k8s:group:sre), as the API server authenticated the caller.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=320
	// +kubebuilder:validation:items:Pattern=`^([^@\s,:]+@[^@\s,]+|group:[A-Za-z0-9][-A-Za-z0-9_.]*|k8s:user:\S+|k8s:group:\S+)$`
	Approvers []string `json:"approvers,omitempty"`

	// AllowSelfApproval lets an approver approve their own request.
	// +optional
	AllowSelfApproval bool `json:"allowSelfApproval,omitempty"`

	// MaxDuration is the longest grant; longer requests are refused.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('720h')",message="spec.maxDuration must be between 1m and 720h"
	MaxDuration metav1.Duration `json:"maxDuration,omitempty"`

	// RequireReason refuses requests without a reason.
	// +optional
	RequireReason bool `json:"requireReason,omitempty"`

	// AutoApprove rules grant matching requests without an approver.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	AutoApprove []AutoApproveRule `json:"autoApprove,omitempty"`

	// Notify says where request, approval, expiry and revoke events go.
	// +optional
	Notify *Notify `json:"notify,omitempty"`
}

// AutoApproveRule grants a request from one of Requesters for at most
// MaxDuration without an approver.
type AutoApproveRule struct {
	// Requesters are tailnet logins or policy groups (group:oncall).
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:Pattern=`^([^@\s,:]+@[^@\s,]+|group:[A-Za-z0-9][-A-Za-z0-9_.]*)$`
	Requesters []string `json:"requesters"`

	// MaxDuration is the longest request this rule approves.
	// +required
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="autoApprove maxDuration must be at least 1m"
	MaxDuration metav1.Duration `json:"maxDuration"`
}

// Notify is a Slack-compatible incoming webhook ({"text": ...}) that gets
// the target's events. A failing webhook never blocks or delays a grant.
//
// +kubebuilder:validation:XValidation:rule="has(self.webhookURL) != has(self.webhookURLSecretRef)",message="set exactly one of webhookURL and webhookURLSecretRef"
type Notify struct {
	// WebhookURL is the webhook's address. Use webhookURLSecretRef when the
	// address holds a token.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://\S+$`
	WebhookURL string `json:"webhookURL,omitempty"`

	// WebhookURLSecretRef names a key of a Secret in the operator's
	// namespace that holds the webhook's address.
	// +optional
	WebhookURLSecretRef *SecretKeyRef `json:"webhookURLSecretRef,omitempty"`
}

// SecretKeyRef is one key of a Secret in the operator's namespace.
type SecretKeyRef struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +required
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
}

// AccessTargetStatus is what the operator saw of the target.
type AccessTargetStatus struct {
	// Conditions: Ready is True when the group exists in the tailnet policy.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ActiveGrants counts the requests whose grant is in the policy now.
	// +optional
	ActiveGrants int32 `json:"activeGrants"`

	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// AccessTarget is a tailnet policy group that may be granted just in time.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=atgt,categories=tsymbiote-access
// +kubebuilder:printcolumn:name="Group",type=string,JSONPath=`.spec.group`
// +kubebuilder:printcolumn:name="Label",type=string,JSONPath=`.spec.label`
// +kubebuilder:printcolumn:name="Max",type=string,JSONPath=`.spec.maxDuration`
// +kubebuilder:printcolumn:name="Active",type=integer,JSONPath=`.status.activeGrants`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AccessTarget struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AccessTargetSpec `json:"spec"`
	// +optional
	Status AccessTargetStatus `json:"status,omitempty"`
}

// AccessTargetList is a list of AccessTargets.
//
// +kubebuilder:object:root=true
type AccessTargetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccessTarget `json:"items"`
}
