package sidecar

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// Inject adds the adapter sidecar to pod, whose name must be set, and
// reports whether it changed anything. A pod that already has the sidecar is
// left alone, so a re-admitted pod is never injected twice.
func Inject(pod *corev1.Pod, cfg *Config) bool {
	if Injected(pod) {
		return false
	}
	secret := SecretName(pod.Name)
	host := Hostname(pod.Name)
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationInjected] = secret
	pod.Annotations[AnnotationHostname] = host
	if !hasString(pod.Finalizers, Finalizer) {
		pod.Finalizers = append(pod.Finalizers, Finalizer)
	}
	// The adapter finds tailscaled's socket through /proc/<pid>/root of the
	// other containers, which needs a shared PID namespace and SYS_PTRACE.
	pod.Spec.ShareProcessNamespace = ptr.To(true)
	if !hasVolume(pod.Spec.Volumes, stateVolume) {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
			Name:         stateVolume,
			VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
		})
	}
	pod.Spec.Containers = append(pod.Spec.Containers, Container(cfg, host, secret))
	return true
}

// Container is the adapter sidecar for a pod whose adapter is called host
// and whose key lives in the Secret named secret.
func Container(cfg *Config, host, secret string) corev1.Container {
	args := []string{"--discover-socket", "--hostname=" + host}
	if cfg.AllowedTag != "" {
		args = append(args, "--allowed-tag="+cfg.AllowedTag)
	}
	return corev1.Container{
		Name:            ContainerName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Args:            args,
		// The Secret exists shortly after the pod does (the controller
		// needs the pod's UID to own it); until then the kubelet retries.
		EnvFrom: []corev1.EnvFromSource{{
			SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: secret}},
		}},
		// tsnet keeps its state under the user config directory.
		Env: append([]corev1.EnvVar{{Name: "XDG_CONFIG_HOME", Value: stateDir}}, cfg.Env...),
		VolumeMounts: []corev1.VolumeMount{{
			Name: stateVolume, MountPath: stateDir,
		}},
		Resources: *cfg.Resources.DeepCopy(),
		// Root with SYS_PTRACE to reach the socket through another
		// container's /proc/<pid>/root; the default capabilities stay, as
		// a tailscaled run by another user may keep its socket in a
		// directory only DAC_OVERRIDE lets root into. Root is said here,
		// not left to the image, so that a pod whose own securityContext
		// asks for runAsNonRoot or another runAsUser for its containers
		// still gets a sidecar that starts and can do its job (the
		// kubelet refuses a root image under runAsNonRoot, and another
		// user gets no capabilities). Nothing is written outside the
		// state volume.
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To[int64](0),
			RunAsGroup:               ptr.To[int64](0),
			RunAsNonRoot:             ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}},
		},
	}
}

func hasString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func hasVolume(vs []corev1.Volume, name string) bool {
	for _, v := range vs {
		if v.Name == name {
			return true
		}
	}
	return false
}
