// Package pod is `tsymbiote pod` and `tsymbiote node`: debugging one
// tailscale-cni pod's tailnet node, and the daemon of one Kubernetes node,
// from wherever a kubeconfig reaches the cluster.
package pod

import (
	"context"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"tsymbiote.dhouti.dev/proto/contract"
)

// The tailscale-cni chart's names (charts/tailscale-cni): its pods' label,
// its daemon's container, and the daemon's --run-dir default.
const (
	DaemonSelector  = "app.kubernetes.io/name=tailscale-cni"
	DaemonContainer = "daemon"
	DefaultRunDir   = "/var/run/tailscale-cni"
)

// Ref is a pod by namespace and name.
type Ref struct{ Namespace, Name string }

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// target is the pod's name among the daemon's sockets and the adapter's
// targets: <namespace>_<pod>.
func (r Ref) target() string { return r.Namespace + "_" + r.Name }

// ParseRef parses <namespace>/<pod>.
func ParseRef(s string) (Ref, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		return Ref{}, fmt.Errorf("pod %q: want <namespace>/<pod>", s)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return Ref{}, fmt.Errorf("pod %q: namespace %q: %s", s, ns, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return Ref{}, fmt.Errorf("pod %q: name %q: %s", s, name, strings.Join(errs, "; "))
	}
	return Ref{ns, name}, nil
}

// Located is a pod on tailscale-cni and where its node's socket is.
type Located struct {
	Ref    Ref
	Node   string      // the Kubernetes node it runs on
	Daemon *corev1.Pod // the tailscale-cni daemon's pod on that node
	Socket string      // its LocalAPI socket, a path on that node
}

// Locate finds r, checks that tailscale-cni can have attached it, and finds
// the daemon pod on its node.
func Locate(ctx context.Context, cs kubernetes.Interface, r Ref) (*Located, error) {
	p, err := cs.CoreV1().Pods(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("pod %s not found", r)
	}
	if err != nil {
		return nil, fmt.Errorf("getting pod %s: %w", r, err)
	}
	switch {
	case p.Spec.HostNetwork:
		return nil, fmt.Errorf("pod %s uses the node's network (hostNetwork), which tailscale-cni does not attach to", r)
	case p.Annotations[contract.AnnotationCNI] == "false":
		return nil, fmt.Errorf("pod %s opted out of tailscale-cni (%s: \"false\")", r, contract.AnnotationCNI)
	case p.Spec.NodeName == "":
		return nil, fmt.Errorf("pod %s is not scheduled to a node yet", r)
	}
	d, err := DaemonOn(ctx, cs, p.Spec.NodeName)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", r, err)
	}
	return &Located{
		Ref:    r,
		Node:   p.Spec.NodeName,
		Daemon: d,
		Socket: path.Join(RunDir(d), "pods", r.target(), "tailscaled.sock"),
	}, nil
}

// DaemonOn finds the tailscale-cni daemon's pod on node, in any namespace:
// the running one that is not being deleted, else any.
func DaemonOn(ctx context.Context, cs kubernetes.Interface, node string) (*corev1.Pod, error) {
	l, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		LabelSelector: DaemonSelector,
		FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil {
		return nil, fmt.Errorf("listing tailscale-cni daemons on node %s: %w", node, err)
	}
	var best *corev1.Pod
	for i := range l.Items {
		p := &l.Items[i]
		if p.Spec.NodeName != node { // a fake client ignores field selectors
			continue
		}
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			return p, nil
		}
		if best == nil {
			best = p
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no tailscale-cni daemon runs on node %s (no pod labelled %s there): is the tailscale-cni chart installed?", node, DaemonSelector)
	}
	return best, nil
}

// RunDir is the daemon's --run-dir, from its container's arguments.
func RunDir(d *corev1.Pod) string {
	for _, c := range d.Spec.Containers {
		if c.Name != DaemonContainer {
			continue
		}
		args := append(append([]string{}, c.Command...), c.Args...)
		for i, a := range args {
			if v, ok := strings.CutPrefix(a, "--run-dir="); ok {
				return v
			}
			if a == "--run-dir" && i+1 < len(args) {
				return args[i+1]
			}
		}
	}
	return DefaultRunDir
}
