package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	"tsymbiote.dhouti.dev/proto/contract"
)

// Labels and annotations on the Secrets the operator makes.
const (
	// ManagedByValue of contract.LabelManagedBy marks the Secrets the
	// operator makes; its cache holds only those.
	ManagedByValue     = "tsymbiote-operator"
	AnnotationExpires  = "tsymbiote.dhouti.dev/key-expires"
	AnnotationKeyID    = "tsymbiote.dhouti.dev/key-id"
	AnnotationNodeID   = "tsymbiote.dhouti.dev/node-id"
	AnnotationPodUID   = "tsymbiote.dhouti.dev/pod-uid"
	defaultKeyExpiry   = time.Hour
	defaultPoll        = 30 * time.Second
	defaultGiveUpAfter = 10 * time.Minute
)

// PodKeyReconciler gives each injected pod an ephemeral, preauthorized,
// single-use auth key tagged tag:tsymbiote-adapter, in a Secret the pod owns
// (so that the garbage collector removes it with the pod). Until the
// adapter's node shows up in the control plane it re-mints a key that is
// about to expire. When the pod is deleted it deletes the node, then
// releases the pod's finalizer.
type PodKeyReconciler struct {
	Client       client.Client
	ControlPlane controlplane.Client

	// KeyExpiry is how long a minted key is valid; 1h when zero.
	KeyExpiry time.Duration
	// RenewBefore re-mints an unused key this long before it expires;
	// KeyExpiry/4 when zero.
	RenewBefore time.Duration
	// Poll is how often a pod whose node has not registered is checked
	// again; 30s when zero.
	Poll time.Duration
	// GiveUpAfter is how long after a pod's deletion the controller keeps
	// trying to delete its node before it releases the pod anyway (the
	// node is ephemeral, so the control plane removes it eventually); 10m
	// when zero.
	GiveUpAfter time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers the reconciler with mgr.
func (r *PodKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	injected := predicate.NewPredicateFuncs(func(o client.Object) bool {
		_, ok := o.GetAnnotations()[sidecar.AnnotationInjected]
		return ok
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("podkey").
		For(&corev1.Pod{}, builder.WithPredicates(injected)).
		Owns(&corev1.Secret{}).
		// Each reconcile may wait on the control plane; pods are
		// independent of each other.
		WithOptions(crcontroller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

func (r *PodKeyReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *PodKeyReconciler) expiry() time.Duration {
	if r.KeyExpiry > 0 {
		return r.KeyExpiry
	}
	return defaultKeyExpiry
}

func (r *PodKeyReconciler) renewBefore() time.Duration {
	if r.RenewBefore > 0 {
		return r.RenewBefore
	}
	return r.expiry() / 4
}

func (r *PodKeyReconciler) poll() time.Duration {
	if r.Poll > 0 {
		return r.Poll
	}
	return defaultPoll
}

func (r *PodKeyReconciler) giveUpAfter() time.Duration {
	if r.GiveUpAfter > 0 {
		return r.GiveUpAfter
	}
	return defaultGiveUpAfter
}

// Reconcile implements reconcile.Reconciler.
func (r *PodKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return requeueOnConflict(r.reconcile(ctx, req))
}

// reconcile runs the phases of one pod's key in order; each returns done
// when the pod needs nothing more this round.
func (r *PodKeyReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod, secretName, err := r.getInjectedPod(ctx, req)
	if pod == nil || err != nil {
		return ctrl.Result{}, err
	}
	if !pod.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, pod, secretName)
	}
	if err := r.ensureFinalizer(ctx, pod); err != nil {
		return ctrl.Result{}, err
	}
	secret, res, err := r.ensureSecret(ctx, pod, secretName)
	if secret == nil || err != nil {
		return res, err
	}
	if secret.Annotations[AnnotationNodeID] != "" {
		return ctrl.Result{}, nil // the key was used; nothing more to do
	}
	if registered, err := r.recordNode(ctx, pod, secret); registered || err != nil {
		return ctrl.Result{}, err
	}
	return r.renewKey(ctx, pod, secret)
}

// getInjectedPod returns the pod and the name of its key Secret, or a nil
// pod when it is gone or was not injected.
func (r *PodKeyReconciler) getInjectedPod(ctx context.Context, req ctrl.Request) (*corev1.Pod, string, error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		// A pod that is gone took its Secret with it (owner reference);
		// its node was deleted before the finalizer let it go.
		return nil, "", client.IgnoreNotFound(err)
	}
	secretName := pod.Annotations[sidecar.AnnotationInjected]
	if secretName == "" {
		return nil, "", nil
	}
	return pod, secretName, nil
}

// ensureFinalizer adds the finalizer that holds the pod until its node is
// deleted. The webhook adds it; this covers pods admitted by an older
// operator or edited by hand.
func (r *PodKeyReconciler) ensureFinalizer(ctx context.Context, pod *corev1.Pod) error {
	if controllerutil.ContainsFinalizer(pod, sidecar.Finalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(pod.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(pod, sidecar.Finalizer)
	if err := r.Client.Patch(ctx, pod, patch); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	return nil
}

// ensureSecret returns the pod's own key Secret. When there is none it
// mints a key into a new one and returns nil with the result to return; a
// Secret of an earlier pod of the same name is deleted first.
func (r *PodKeyReconciler) ensureSecret(ctx context.Context, pod *corev1.Pod, name string) (*corev1.Secret, ctrl.Result, error) {
	secret := &corev1.Secret{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: name}, secret)
	switch {
	case apierrors.IsNotFound(err):
		res, err := r.createSecret(ctx, pod, name)
		return nil, res, err
	case err != nil:
		return nil, ctrl.Result{}, fmt.Errorf("getting secret: %w", err)
	}
	if !metav1.IsControlledBy(secret, pod) {
		// A Secret left by an earlier pod of the same name (StatefulSets
		// reuse names) that the garbage collector has not removed yet.
		// Replace it rather than adopt it: its key may have been used.
		log.FromContext(ctx).Info("replacing the secret of an earlier pod with the same name", "secret", name)
		if err := r.Client.Delete(ctx, secret, client.Preconditions{UID: &secret.UID}); client.IgnoreNotFound(err) != nil {
			return nil, ctrl.Result{}, fmt.Errorf("deleting stale secret: %w", err)
		}
		return nil, ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return secret, ctrl.Result{}, nil
}

// recordNode records on the Secret the ID of the adapter node that used
// its key, once the node is in the control plane, and reports whether it
// did.
func (r *PodKeyReconciler) recordNode(ctx context.Context, pod *corev1.Pod, secret *corev1.Secret) (bool, error) {
	host := pod.Annotations[sidecar.AnnotationHostname]
	dev, err := r.findNode(ctx, host)
	if dev == nil || err != nil {
		return false, err
	}
	patch := client.MergeFrom(secret.DeepCopy())
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	secret.Annotations[AnnotationNodeID] = dev.ID
	if err := r.Client.Patch(ctx, secret, patch); err != nil {
		return false, fmt.Errorf("recording node id: %w", err)
	}
	log.FromContext(ctx).Info("adapter node registered", "hostname", host, "node", dev.ID)
	return true, nil
}

// renewKey re-mints a key nobody used once it is in the last part of its
// life (RenewBefore), so that a pod that starts late still gets a valid
// one, and otherwise waits.
func (r *PodKeyReconciler) renewKey(ctx context.Context, pod *corev1.Pod, secret *corev1.Secret) (ctrl.Result, error) {
	expires, _ := time.Parse(time.RFC3339, secret.Annotations[AnnotationExpires])
	renewAt := expires.Add(-r.renewBefore())
	if left := renewAt.Sub(r.now()); left > 0 {
		return ctrl.Result{RequeueAfter: min(left, r.poll())}, nil
	}
	key, err := r.mint(ctx, pod, "renew")
	if err != nil {
		return ctrl.Result{}, err
	}
	patch := client.MergeFromWithOptions(secret.DeepCopy(), client.MergeFromWithOptimisticLock{})
	fillSecret(secret, key, r.ControlPlane.ControlURL())
	if err := r.Client.Patch(ctx, secret, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("updating secret with a fresh key: %w", err)
	}
	log.FromContext(ctx).Info("re-minted an unused adapter key before it expired", "secret", secret.Name, "expires", key.Expires.UTC().Format(time.RFC3339))
	return ctrl.Result{RequeueAfter: r.poll()}, nil
}

func (r *PodKeyReconciler) createSecret(ctx context.Context, pod *corev1.Pod, name string) (ctrl.Result, error) {
	key, err := r.mint(ctx, pod, "new")
	if err != nil {
		return ctrl.Result{}, err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name:      name,
		Namespace: pod.Namespace,
		Labels:    map[string]string{contract.LabelManagedBy: ManagedByValue},
	}}
	fillSecret(secret, key, r.ControlPlane.ControlURL())
	secret.Annotations[AnnotationPodUID] = string(pod.UID)
	if err := controllerutil.SetControllerReference(pod, secret, r.Client.Scheme(), controllerutil.WithBlockOwnerDeletion(false)); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.Client.Create(ctx, secret); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Either the garbage collector has yet to remove an earlier
			// pod's Secret, or someone else's Secret has the name (the
			// cache only holds the operator's own).
			return ctrl.Result{}, fmt.Errorf("secret %s already exists and is not (yet) this pod's; retrying", name)
		}
		return ctrl.Result{}, fmt.Errorf("creating secret: %w", err)
	}
	log.FromContext(ctx).Info("minted adapter key", "secret", name, "expires", key.Expires.UTC().Format(time.RFC3339))
	return ctrl.Result{RequeueAfter: r.poll()}, nil
}

func (r *PodKeyReconciler) mint(ctx context.Context, pod *corev1.Pod, reason string) (*controlplane.AuthKey, error) {
	key, err := r.ControlPlane.CreateAuthKey(ctx, controlplane.AuthKeyRequest{
		Tags:          []string{contract.TagAdapter},
		Ephemeral:     true,
		Preauthorized: true,
		Reusable:      false,
		Expiry:        r.expiry(),
		Description:   "tsymbiote adapter " + pod.Namespace + "/" + pod.Name,
	})
	if err != nil {
		controlPlaneErrors.WithLabelValues("create_key").Inc()
		return nil, fmt.Errorf("minting adapter key: %w", err)
	}
	keysMinted.WithLabelValues(reason).Inc()
	return key, nil
}

func fillSecret(s *corev1.Secret, key *controlplane.AuthKey, controlURL string) {
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[AnnotationExpires] = key.Expires.UTC().Format(time.RFC3339)
	s.Annotations[AnnotationKeyID] = key.ID
	s.Type = corev1.SecretTypeOpaque
	s.Data = map[string][]byte{sidecar.SecretKeyAuthKey: []byte(key.Key.Reveal())}
	if controlURL != "" {
		s.Data[sidecar.SecretKeyControlURL] = []byte(controlURL)
	}
}

// findNode returns the adapter node registered under host, or nil.
func (r *PodKeyReconciler) findNode(ctx context.Context, host string) (*controlplane.Device, error) {
	devs, err := r.nodes(ctx, host)
	if err != nil || len(devs) == 0 {
		return nil, err
	}
	return &devs[0], nil
}

func (r *PodKeyReconciler) nodes(ctx context.Context, host string) ([]controlplane.Device, error) {
	if host == "" {
		return nil, nil
	}
	devs, err := r.ControlPlane.ListDevices(ctx, controlplane.ListOptions{Tag: contract.TagAdapter})
	if err != nil {
		controlPlaneErrors.WithLabelValues("list_devices").Inc()
		return nil, fmt.Errorf("listing adapter nodes: %w", err)
	}
	var out []controlplane.Device
	for _, d := range devs {
		if d.Hostname == host || d.Name == host {
			out = append(out, d)
		}
	}
	return out, nil
}

// finalize deletes a deleted pod's adapter node and releases the pod.
func (r *PodKeyReconciler) finalize(ctx context.Context, pod *corev1.Pod, secretName string) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(pod, sidecar.Finalizer) {
		return ctrl.Result{}, nil
	}
	if err := r.deleteNodes(ctx, pod, secretName); err != nil {
		if r.now().Sub(pod.DeletionTimestamp.Time) < r.giveUpAfter() {
			return ctrl.Result{}, err
		}
		log.FromContext(ctx).Error(err, "giving up deleting the adapter node; the control plane removes ephemeral nodes once they are offline")
	}
	return ctrl.Result{}, r.releasePod(ctx, pod)
}

// releasePod removes the pod's finalizer, which lets its deletion finish.
func (r *PodKeyReconciler) releasePod(ctx context.Context, pod *corev1.Pod) error {
	patch := client.MergeFromWithOptions(pod.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(pod, sidecar.Finalizer)
	if err := r.Client.Patch(ctx, pod, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("removing finalizer: %w", err)
	}
	return nil
}

// deleteNodes deletes the pod's adapter node: the one recorded on its
// Secret, or else every adapter node with the pod's hostname (the key may
// have been used after the last reconcile).
func (r *PodKeyReconciler) deleteNodes(ctx context.Context, pod *corev1.Pod, secretName string) error {
	var ids []string
	secret := &corev1.Secret{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: secretName}, secret)
	if err == nil && metav1.IsControlledBy(secret, pod) && secret.Annotations[AnnotationNodeID] != "" {
		ids = append(ids, secret.Annotations[AnnotationNodeID])
	} else {
		devs, err := r.nodes(ctx, pod.Annotations[sidecar.AnnotationHostname])
		if err != nil {
			return err
		}
		for _, d := range devs {
			ids = append(ids, d.ID)
		}
	}
	for _, id := range ids {
		err := r.ControlPlane.DeleteDevice(ctx, id)
		switch {
		case errors.Is(err, controlplane.ErrNotFound):
			continue
		case err != nil:
			controlPlaneErrors.WithLabelValues("delete_device").Inc()
			return fmt.Errorf("deleting adapter node %s: %w", id, err)
		}
		nodesDeleted.Inc()
		log.FromContext(ctx).Info("deleted adapter node", "node", id)
	}
	return nil
}
