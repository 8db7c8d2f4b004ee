// Package v1alpha1 holds the tsymbiote.dhouti.dev/v1alpha1 API: the TSymbiote
// resource, which deploys the TSymbiote WebUI as a StatefulSet.
//
// +kubebuilder:object:generate=true
// +groupName=tsymbiote.dhouti.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "tsymbiote.dhouti.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this API's types.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
