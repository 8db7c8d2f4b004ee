package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Phase is where an AccessRequest is in its life.
// +kubebuilder:validation:Enum=Pending;Approved;Active;Denied;Expired;Revoked;Failed
type Phase string

const (
	PhasePending  Phase = "Pending"  // waiting for a decision
	PhaseApproved Phase = "Approved" // approved, not yet in the policy
	PhaseActive   Phase = "Active"   // the login is in the group
	PhaseDenied   Phase = "Denied"   // final
	PhaseExpired  Phase = "Expired"  // final: the grant ran out and was removed
	PhaseRevoked  Phase = "Revoked"  // final: revoked early (or cancelled) and removed
	PhaseFailed   Phase = "Failed"   // final: invalid (unknown login, missing group)
)

// Final reports whether nothing more happens to a request in phase p.
func (p Phase) Final() bool {
	switch p {
	case PhaseDenied, PhaseExpired, PhaseRevoked, PhaseFailed:
		return true
	}
	return false
}

// Action is a decision on a request.
// +kubebuilder:validation:Enum=Approve;Deny;Revoke
type Action string

const (
	ActionApprove Action = "Approve"
	ActionDeny    Action = "Deny"
	// ActionRevoke ends an approved grant early, or cancels a pending
	// request (the requester may do both for their own request).
	ActionRevoke Action = "Revoke"
)

// Events recorded in status.history (and as Kubernetes Event reasons).
const (
	EventRequested    = "Requested"
	EventApproved     = "Approved"
	EventAutoApproved = "AutoApproved"
	EventDenied       = "Denied"
	EventGranted      = "Granted"
	EventExpired      = "Expired"
	EventRevoked      = "Revoked"
	EventFailed       = "Failed"
)

// AccessRequestSpec asks for a target for a while, and carries the decision.
//
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.decision) || has(self.decision)",message="spec.decision cannot be removed"
type AccessRequestSpec struct {
	// Target is the name of the AccessTarget.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.target is immutable"
	Target string `json:"target"`

	// Requester is the tailnet login put in the target's group.
	// +required
	// +kubebuilder:validation:MaxLength=320
	// +kubebuilder:validation:Pattern=`^[^@\s,:]+@[^@\s,]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.requester is immutable"
	Requester string `json:"requester"`

	// Duration of the grant, from the moment it is in the policy.
	// +required
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="spec.duration must be at least 1m"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.duration is immutable"
	Duration metav1.Duration `json:"duration"`

	// Reason the requester gives.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.reason is immutable"
	Reason string `json:"reason,omitempty"`

	// Decision is set by an approver (Approve, Deny, Revoke) or by the
	// requester (Revoke). The admission webhook checks who may set it and
	// records the Kubernetes caller in the decided-by annotation.
	// +optional
	Decision *Decision `json:"decision,omitempty"`
}

// Decision is one approver's decision.
type Decision struct {
	// Action: Approve, Deny or Revoke. Approve may become Revoke; nothing
	// else changes once set.
	// +required
	Action Action `json:"action"`

	// By is who decided: a tailnet login the WebUI asserts, or
	// k8s:user:<name>, which the webhook fills in for kubectl callers.
	// +optional
	// +kubebuilder:validation:MaxLength=320
	By string `json:"by,omitempty"`

	// Reason for the decision.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Reason string `json:"reason,omitempty"`
}

// HistoryEntry is one step of a request's life.
type HistoryEntry struct {
	Time  metav1.Time `json:"time"`
	Event string      `json:"event"`
	// +optional
	By string `json:"by,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
}

// AccessRequestStatus is what the operator did with the request.
type AccessRequestStatus struct {
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// Message says why the request is in its phase, e.g. why it failed.
	// +optional
	Message string `json:"message,omitempty"`
	// ApprovedAt is when the decision (or an auto-approve rule) approved it.
	// +optional
	ApprovedAt *metav1.Time `json:"approvedAt,omitempty"`
	// GrantedAt is when the login was written into the policy group.
	// +optional
	GrantedAt *metav1.Time `json:"grantedAt,omitempty"`
	// ExpiresAt is GrantedAt plus the duration.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// EndedAt is when the login was taken out of the group again.
	// +optional
	EndedAt *metav1.Time `json:"endedAt,omitempty"`
	// History lists every step with its time, actor and reason.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	History []HistoryEntry `json:"history,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// AccessRequest asks for a tailnet login to be in a target's policy group
// for a while.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=areq,categories=tsymbiote-access
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.target`
// +kubebuilder:printcolumn:name="Requester",type=string,JSONPath=`.spec.requester`
// +kubebuilder:printcolumn:name="Duration",type=string,JSONPath=`.spec.duration`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Expires",type=date,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="By",type=string,JSONPath=`.spec.decision.by`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AccessRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AccessRequestSpec `json:"spec"`
	// +optional
	Status AccessRequestStatus `json:"status,omitempty"`
}

// AccessRequestList is a list of AccessRequests.
//
// +kubebuilder:object:root=true
type AccessRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccessRequest `json:"items"`
}
