// Package v1alpha1 is the access.tsymbiote.dhouti.dev/v1alpha1 API of
// just-in-time tailnet access: AccessTargets name a tailnet policy group that
// may be granted for a while, and AccessRequests ask for, decide and record
// one such grant. The operator reconciles them; the WebUI and the CLI create
// and decide requests. It lives in proto, the shared contract module, so that
// the WebUI never imports the operator.
//
// +kubebuilder:object:generate=true
// +groupName=access.tsymbiote.dhouti.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "access.tsymbiote.dhouti.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this API's types.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&AccessTarget{}, &AccessTargetList{},
		&AccessRequest{}, &AccessRequestList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
