package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SubnetRouterSpec is a tailnet node that advertises routes into the
// cluster (or anywhere the operator's namespace can reach).
type SubnetRouterSpec struct {
	// Routes are the CIDRs the node advertises, e.g. the service CIDR
	// 10.96.0.0/12. The operator approves them through the control plane
	// unless the policy's autoApprovers already did; a route removed here
	// is withdrawn.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	Routes []string `json:"routes"`

	// Hostname is the node's tailnet hostname; the resource's name when
	// empty.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Hostname string `json:"hostname,omitempty"`

	// Tags of the node; the operator's --proxy-default-tags when empty.
	// +optional
	// +listType=set
	Tags []string `json:"tags,omitempty"`
}

// SubnetRouterStatus is what the operator observed.
type SubnetRouterStatus struct {
	// Conditions: Ready says whether the routes are advertised and
	// approved, and why not.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// FQDN is the node's MagicDNS name.
	// +optional
	FQDN string `json:"fqdn,omitempty"`
	// Addresses are the node's tailnet addresses.
	// +optional
	Addresses []string `json:"addresses,omitempty"`
	// ApprovedRoutes are the routes the control plane approved.
	// +optional
	ApprovedRoutes []string `json:"approvedRoutes,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// SubnetRouter runs a tailnet node that advertises routes.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=tssr
// +kubebuilder:printcolumn:name="Routes",type=string,JSONPath=`.spec.routes`
// +kubebuilder:printcolumn:name="FQDN",type=string,JSONPath=`.status.fqdn`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SubnetRouter struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SubnetRouterSpec   `json:"spec,omitempty"`
	Status SubnetRouterStatus `json:"status,omitempty"`
}

// SubnetRouterList is a list of SubnetRouters.
//
// +kubebuilder:object:root=true
type SubnetRouterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SubnetRouter `json:"items"`
}

func init() {
	SchemeBuilder.Register(&SubnetRouter{}, &SubnetRouterList{})
}
