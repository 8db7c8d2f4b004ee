// Package sidecar describes the TSymbiote adapter sidecar: the names the
// webhook and the secrets controller agree on, and the pure function that
// injects the container into a pod spec.
package sidecar

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"tsymbiote.dhouti.dev/proto/contract"
)

const (
	// ContainerName is the injected container's name; its presence is what
	// makes injection idempotent.
	ContainerName = "tsymbiote-adapter"

	// AnnotationInjected marks a pod the webhook injected; its value is the
	// name of the pod's key Secret.
	AnnotationInjected = "tsymbiote.dhouti.dev/adapter-secret"
	// AnnotationHostname is the adapter's tailnet hostname, so that the
	// controller can find (and delete) its node.
	AnnotationHostname = "tsymbiote.dhouti.dev/adapter-hostname"

	// Finalizer holds a deleted injected pod until its adapter node is gone
	// from the control plane.
	Finalizer = "tsymbiote.dhouti.dev/adapter-node"

	// Keys of the pod's Secret; they become the sidecar's environment.
	SecretKeyAuthKey    = "TS_AUTHKEY"
	SecretKeyControlURL = "TS_CONTROL_URL"

	stateVolume = "tsymbiote-adapter-state"
	stateDir    = "/var/lib/tsymbiote-adapter"
)

// Config is the operator's configuration of the sidecar.
type Config struct {
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// AllowedTag is passed as --allowed-tag when set; the adapter's own
	// default (tag:tsymbiote-webui) otherwise.
	AllowedTag string
	Resources  corev1.ResourceRequirements
	// Env is added to the sidecar's environment after the operator's own
	// variables: tailscale knobs a cluster's control plane needs (such as
	// TS_DEBUG_USE_DERP_HTTP for a DERP server without TLS).
	Env []corev1.EnvVar
}

// Validate reports the first problem with c, naming the flag to fix.
func (c *Config) Validate() error {
	if strings.TrimSpace(c.Image) == "" {
		return fmt.Errorf("adapter image is empty (set --adapter-image)")
	}
	switch c.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("--adapter-image-pull-policy %q: want Always, IfNotPresent or Never", c.ImagePullPolicy)
	}
	if c.AllowedTag != "" && !strings.HasPrefix(c.AllowedTag, "tag:") {
		return fmt.Errorf("--adapter-allowed-tag %q: must start with \"tag:\"", c.AllowedTag)
	}
	for _, e := range c.Env {
		if reserved[e.Name] {
			return fmt.Errorf("--adapter-env %s: set by the operator itself", e.Name)
		}
	}
	return nil
}

// reserved are the sidecar's variables the operator sets; --adapter-env
// may not override them.
var reserved = map[string]bool{"XDG_CONFIG_HOME": true, SecretKeyAuthKey: true, SecretKeyControlURL: true}

// ParseEnv builds environment variables from NAME=VALUE pairs
// (--adapter-env), in order.
func ParseEnv(pairs []string) ([]corev1.EnvVar, error) {
	var env []corev1.EnvVar
	seen := map[string]bool{}
	for _, p := range pairs {
		name, value, ok := strings.Cut(p, "=")
		if !ok || len(validation.IsEnvVarName(name)) > 0 {
			return nil, fmt.Errorf("--adapter-env %q: want NAME=VALUE with a valid variable name", p)
		}
		if seen[name] {
			return nil, fmt.Errorf("--adapter-env: %s given twice", name)
		}
		seen[name] = true
		env = append(env, corev1.EnvVar{Name: name, Value: value})
	}
	return env, nil
}

// ParseResources builds requirements from "cpu=10m,memory=32Mi"-style
// lists for requests and limits; empty lists set nothing.
func ParseResources(requests, limits string) (corev1.ResourceRequirements, error) {
	var rr corev1.ResourceRequirements
	var err error
	if rr.Requests, err = parseList("--adapter-requests", requests); err != nil {
		return rr, err
	}
	if rr.Limits, err = parseList("--adapter-limits", limits); err != nil {
		return rr, err
	}
	return rr, nil
}

func parseList(flag, s string) (corev1.ResourceList, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	l := corev1.ResourceList{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("%s: %q is not name=quantity", flag, kv)
		}
		if k != string(corev1.ResourceCPU) && k != string(corev1.ResourceMemory) && k != string(corev1.ResourceEphemeralStorage) {
			return nil, fmt.Errorf("%s: unknown resource %q (want cpu, memory or ephemeral-storage)", flag, k)
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %s=%q: %w", flag, k, v, err)
		}
		if _, dup := l[corev1.ResourceName(k)]; dup {
			return nil, fmt.Errorf("%s: %s given twice", flag, k)
		}
		l[corev1.ResourceName(k)] = q
	}
	return l, nil
}

// SecretName is the name of the Secret holding a pod's adapter key. Names
// that would be too long are shortened with a hash so that they stay unique.
func SecretName(podName string) string {
	const suffix = "-tsymbiote-adapter"
	if len(podName)+len(suffix) <= validation.DNS1123SubdomainMaxLength {
		return podName + suffix
	}
	return podName[:validation.DNS1123SubdomainMaxLength-len(suffix)-9] + "-" + shortHash(podName) + suffix
}

// Hostname is the adapter's tailnet hostname for a pod: the pod name, made a
// single DNS label (dots become dashes) and shortened with a hash if needed.
func Hostname(podName string) string {
	h := strings.Trim(strings.ReplaceAll(strings.ToLower(podName), ".", "-"), "-")
	if len(h) <= validation.DNS1123LabelMaxLength {
		return h
	}
	return strings.TrimRight(h[:validation.DNS1123LabelMaxLength-9], "-") + "-" + shortHash(podName)
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// Wants reports whether a pod's labels opt it in.
func Wants(labels map[string]string) bool {
	return labels[contract.LabelSecretInjection] == contract.InjectionEnabled
}

// Injected reports whether pod already has the sidecar.
func Injected(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if c.Name == ContainerName {
			return true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == ContainerName {
			return true
		}
	}
	return false
}
