package controller

import (
	"fmt"
	"maps"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
	"tsymbiote.dhouti.dev/proto/contract"
)

// WebUIContainerName is the WebUI container in the StatefulSet's pods.
const WebUIContainerName = "webui"

const webUIStateDir = "/var/lib/tsymbiote-webui"

// webUIProbePort is where the WebUI answers the kubelet's probes
// (--health-addr): the WebUI itself listens only on the tailnet.
const webUIProbePort = 8081

// StatefulSetName is the name of a TSymbiote's WebUI StatefulSet.
func StatefulSetName(t *v1alpha1.TSymbiote) string { return t.Name }

// selectorLabels select a TSymbiote's WebUI pods. They never change, as a
// StatefulSet's selector is immutable.
func selectorLabels(t *v1alpha1.TSymbiote) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":     "tsymbiote-webui",
		"app.kubernetes.io/instance": t.Name,
		contract.LabelManagedBy:      ManagedByValue,
	}
}

// AnnotationAuthHash on the WebUI's pod template identifies the auth
// Secret's content, so that changing the credentials rolls the WebUI.
const AnnotationAuthHash = "tsymbiote.dhouti.dev/auth-secret-hash"

// WebUIStatefulSet is the StatefulSet that runs t's WebUI with the auth
// Secret whose content hashes to authHash. The owner reference is set by the
// caller.
func WebUIStatefulSet(t *v1alpha1.TSymbiote, authHash string) *appsv1.StatefulSet {
	sel := selectorLabels(t)
	podLabels := maps.Clone(sel)
	var (
		podAnnotations map[string]string
		o              = t.Spec.Pod
	)
	if o == nil {
		o = &v1alpha1.PodOverrides{}
	}
	for k, v := range o.Labels {
		if _, reserved := sel[k]; !reserved {
			podLabels[k] = v
		}
	}
	if len(o.Annotations) > 0 {
		podAnnotations = maps.Clone(o.Annotations)
	}
	if authHash != "" {
		if podAnnotations == nil {
			podAnnotations = map[string]string{}
		}
		podAnnotations[AnnotationAuthHash] = authHash
	}

	args := []string{"--hostname=" + t.EffectiveHostname(), fmt.Sprintf("--health-addr=:%d", webUIProbePort)}
	if t.GeneratesAuth() {
		args = append(args, "--generate-auth=true")
	} else {
		args = append(args, "--generate-auth=false")
	}
	if len(t.Spec.AllowedUsers) > 0 {
		args = append(args, "--allowed-users="+strings.Join(t.Spec.AllowedUsers, ","))
	}
	if t.Spec.Access {
		args = append(args, "--access")
	}
	// The root filesystem is read-only: tsnet's state, and the temporary
	// directory the WebUI keeps it in when it logs out on exit, live on
	// the state volume.
	env := []corev1.EnvVar{{Name: "XDG_CONFIG_HOME", Value: webUIStateDir}, {Name: "TMPDIR", Value: webUIStateDir}}
	env = append(env, o.Env...)
	c := corev1.Container{
		Name:            WebUIContainerName,
		Image:           t.Spec.Image,
		ImagePullPolicy: t.Spec.ImagePullPolicy,
		Args:            args,
		EnvFrom: []corev1.EnvFromSource{{
			SecretRef: &corev1.SecretEnvSource{LocalObjectReference: t.Spec.AuthSecretRef},
		}},
		Env:          env,
		VolumeMounts: []corev1.VolumeMount{{Name: "state", MountPath: webUIStateDir}},
		Ports:        []corev1.ContainerPort{{Name: "probes", ContainerPort: webUIProbePort, Protocol: corev1.ProtocolTCP}},
		// Ready once the WebUI has joined the tailnet and serves there, so
		// that the TSymbiote's Ready condition means a usable WebUI.
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("probes")}},
			PeriodSeconds: 2, FailureThreshold: 3,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("probes")}},
			PeriodSeconds: 20, FailureThreshold: 3,
		},
		// What the restricted Pod Security Standard asks, so that the WebUI
		// runs in namespaces that enforce it: the WebUI needs no privilege
		// (tsnet networking is in userspace).
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if o.Resources != nil {
		c.Resources = *o.Resources.DeepCopy()
	}
	return &appsv1.StatefulSet{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      StatefulSetName(t),
			Namespace: t.Namespace,
			Labels:    maps.Clone(sel),
		},
		Spec: appsv1.StatefulSetSpec{
			// One replica: the WebUI has one static tailnet hostname.
			Replicas:    ptr.To[int32](1),
			ServiceName: StatefulSetName(t),
			Selector:    &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					Containers:         []corev1.Container{c},
					ServiceAccountName: o.ServiceAccountName,
					NodeSelector:       o.NodeSelector,
					Tolerations:        o.Tolerations,
					Affinity:           o.Affinity,
					ImagePullSecrets:   o.ImagePullSecrets,
					PriorityClassName:  o.PriorityClassName,
					Volumes: []corev1.Volume{{
						Name:         "state",
						VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
					}},
				},
			},
		},
	}
}
