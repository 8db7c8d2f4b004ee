package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
)

// FieldOwner is the server-side apply field manager of the operator.
const FieldOwner = "tsymbiote-operator"

// TSymbioteFinalizer removes the WebUI's node from the control plane when a
// TSymbiote is deleted.
const TSymbioteFinalizer = "tsymbiote.dhouti.dev/webui-node"

// WebUITag is the tag the WebUI's node carries.
const WebUITag = "tag:tsymbiote-webui"

const authSecretRecheck = 30 * time.Second

// TSymbioteReconciler runs each TSymbiote's WebUI as a StatefulSet.
type TSymbioteReconciler struct {
	Client client.Client
	// APIReader reads the auth Secret, which the manager's cache (limited
	// to the operator's own Secrets) does not hold.
	APIReader client.Reader
	// ControlPlane, when set, is used to delete the WebUI's node when its
	// TSymbiote is deleted.
	ControlPlane controlplane.Client
	// Recheck is how often the auth Secret is read again (it is not
	// watched: the cache holds only the operator's own Secrets); a change
	// rolls the WebUI. 5m when zero.
	Recheck time.Duration
}

func (r *TSymbioteReconciler) recheck() time.Duration {
	if r.Recheck > 0 {
		return r.Recheck
	}
	return 5 * time.Minute
}

// +kubebuilder:rbac:groups=tsymbiote.dhouti.dev,resources=tsymbiotes,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=tsymbiote.dhouti.dev,resources=tsymbiotes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tsymbiote.dhouti.dev,resources=tsymbiotes/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers the reconciler with mgr.
func (r *TSymbioteReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("tsymbiote").
		For(&v1alpha1.TSymbiote{}).
		Owns(&appsv1.StatefulSet{}).
		Complete(r)
}

// Reconcile implements reconcile.Reconciler: get, finalizer, validate,
// provision, status.
func (r *TSymbioteReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return requeueOnConflict(r.reconcile(ctx, req))
}

func (r *TSymbioteReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	t := &v1alpha1.TSymbiote{}
	if err := r.Client.Get(ctx, req.NamespacedName, t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if !t.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, t)
	}
	if !controllerutil.ContainsFinalizer(t, TSymbioteFinalizer) {
		patch := client.MergeFromWithOptions(t.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(t, TSymbioteFinalizer)
		if err := r.Client.Patch(ctx, t, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}

	status := t.Status.DeepCopy()
	status.ObservedGeneration = t.Generation
	status.Hostname = t.EffectiveHostname()
	status.StatefulSetName = StatefulSetName(t)

	authHash, reason, msg := r.validate(ctx, t)
	if reason != "" {
		setReady(status, t, metav1.ConditionFalse, reason, msg)
		return ctrl.Result{RequeueAfter: min(authSecretRecheck, r.recheck())}, r.updateStatus(ctx, t, status)
	}

	sts, err := r.provision(ctx, t, authHash)
	if err != nil {
		setReady(status, t, metav1.ConditionFalse, v1alpha1.ReasonProvisionFailed, err.Error())
		return ctrl.Result{}, errors.Join(err, r.updateStatus(ctx, t, status))
	}

	status.ReadyReplicas = sts.Status.ReadyReplicas
	want := int32(1)
	if sts.Spec.Replicas != nil {
		want = *sts.Spec.Replicas
	}
	if sts.Status.ObservedGeneration >= sts.Generation && sts.Status.ReadyReplicas >= want && sts.Status.UpdatedReplicas >= want {
		setReady(status, t, metav1.ConditionTrue, v1alpha1.ReasonReady, "the WebUI StatefulSet has a ready replica")
	} else {
		setReady(status, t, metav1.ConditionFalse, v1alpha1.ReasonProgressing,
			fmt.Sprintf("waiting for the WebUI StatefulSet: %d/%d ready", sts.Status.ReadyReplicas, want))
	}
	return ctrl.Result{RequeueAfter: r.recheck()}, r.updateStatus(ctx, t, status)
}

func setReady(s *v1alpha1.TSymbioteStatus, t *v1alpha1.TSymbiote, st metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&s.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: st, Reason: reason, Message: msg, ObservedGeneration: t.Generation,
	})
}

// updateStatus writes status only when it differs from what is stored, so
// that a steady state makes no writes (and no new reconciles).
func (r *TSymbioteReconciler) updateStatus(ctx context.Context, t *v1alpha1.TSymbiote, status *v1alpha1.TSymbioteStatus) error {
	if equality.Semantic.DeepEqual(&t.Status, status) {
		return nil
	}
	t.Status = *status
	if err := r.Client.Status().Update(ctx, t); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	return nil
}

// authKeySets are the Secret keys that let the WebUI authenticate, for
// --generate-auth and without it.
var (
	generateAuthKeys = [][]string{
		{controlplane.EnvOAuthClientID, controlplane.EnvOAuthClientSecret},
		{controlplane.EnvAPIKey},
		{controlplane.EnvHeadscaleURL, controlplane.EnvHeadscaleAPIKey},
	}
	authKeyKeys = [][]string{{"TS_AUTHKEY"}}
)

// validate checks what the schema cannot: that the auth Secret exists and
// holds credentials. It returns a hash of the Secret's data, or a reason and
// message when it is unusable.
func (r *TSymbioteReconciler) validate(ctx context.Context, t *v1alpha1.TSymbiote) (hash, reason, msg string) {
	s := &corev1.Secret{}
	name := t.Spec.AuthSecretRef.Name
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return "", v1alpha1.ReasonAuthSecretMissing, fmt.Sprintf("spec.authSecretRef: secret %q not found", name)
		}
		return "", v1alpha1.ReasonAuthSecretMissing, fmt.Sprintf("spec.authSecretRef: reading secret %q: %v", name, err)
	}
	sets := authKeyKeys
	if t.GeneratesAuth() {
		sets = generateAuthKeys
	}
	for _, set := range sets {
		if slices.IndexFunc(set, func(k string) bool { return len(s.Data[k]) == 0 }) < 0 {
			return dataHash(s.Data), "", ""
		}
	}
	var want []string
	for _, set := range sets {
		want = append(want, strings.Join(set, "+"))
	}
	return "", v1alpha1.ReasonAuthSecretInvalid, fmt.Sprintf("spec.authSecretRef: secret %q must hold %s", name, strings.Join(want, ", or "))
}

// dataHash identifies a Secret's content without revealing it.
func dataHash(data map[string][]byte) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(data)) {
		fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(data[k]))
		h.Write(data[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// provision server-side applies the StatefulSet and returns it as stored.
func (r *TSymbioteReconciler) provision(ctx context.Context, t *v1alpha1.TSymbiote, authHash string) (*appsv1.StatefulSet, error) {
	sts := WebUIStatefulSet(t, authHash)
	if err := controllerutil.SetControllerReference(t, sts, r.Client.Scheme()); err != nil {
		return nil, err
	}
	u, err := applyObject(sts)
	if err != nil {
		return nil, err
	}
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return nil, fmt.Errorf("applying statefulset: %w", err)
	}
	out := &appsv1.StatefulSet{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		return nil, err
	}
	return out, nil
}

// applyObject turns a typed object into an apply request: without status
// and the zero creation timestamps that typed structs always carry.
func applyObject(obj runtime.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
	return u, nil
}

func (r *TSymbioteReconciler) finalize(ctx context.Context, t *v1alpha1.TSymbiote) error {
	if !controllerutil.ContainsFinalizer(t, TSymbioteFinalizer) {
		return nil
	}
	if r.ControlPlane != nil {
		host := t.EffectiveHostname()
		devs, err := r.ControlPlane.ListDevices(ctx, controlplane.ListOptions{Tag: WebUITag})
		if err != nil {
			return fmt.Errorf("listing webui nodes: %w", err)
		}
		for _, d := range devs {
			if d.Hostname != host && d.Name != host {
				continue
			}
			if err := r.ControlPlane.DeleteDevice(ctx, d.ID); err != nil && !errors.Is(err, controlplane.ErrNotFound) {
				return fmt.Errorf("deleting webui node %s: %w", d.ID, err)
			}
			log.FromContext(ctx).Info("deleted webui node", "node", d.ID)
		}
	}
	patch := client.MergeFromWithOptions(t.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(t, TSymbioteFinalizer)
	return client.IgnoreNotFound(r.Client.Patch(ctx, t, patch))
}
