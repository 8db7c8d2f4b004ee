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
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
	"tsymbiote.dhouti.dev/proto/contract"
)

// FieldOwner is the server-side apply field manager of the operator.
const FieldOwner = "tsymbiote-operator"

// TSymbioteFinalizer removes the WebUI's node from the control plane when a
// TSymbiote is deleted.
const TSymbioteFinalizer = "tsymbiote.dhouti.dev/webui-node"

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
	// Recorder, when set, reports changes of the Ready condition as
	// Events on the TSymbiote.
	Recorder record.EventRecorder
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
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

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
	t, err := r.get(ctx, req)
	if t == nil || err != nil {
		return ctrl.Result{}, err
	}
	if !t.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, t)
	}
	if err := r.ensureFinalizer(ctx, t); err != nil {
		return ctrl.Result{}, err
	}
	status := observedStatus(t)
	authHash, reason, msg, err := r.validate(ctx, t)
	if err != nil {
		return ctrl.Result{}, err
	}
	if reason != "" {
		setReady(status, t, metav1.ConditionFalse, reason, msg)
		return ctrl.Result{RequeueAfter: min(authSecretRecheck, r.recheck())}, r.updateStatus(ctx, t, status)
	}
	sts, err := r.provision(ctx, t, authHash)
	if err != nil {
		setReady(status, t, metav1.ConditionFalse, v1alpha1.ReasonProvisionFailed, err.Error())
		return ctrl.Result{}, errors.Join(err, r.updateStatus(ctx, t, status))
	}
	setReadiness(status, t, sts)
	return ctrl.Result{RequeueAfter: r.recheck()}, r.updateStatus(ctx, t, status)
}

// get returns the TSymbiote, or nil when it is gone.
func (r *TSymbioteReconciler) get(ctx context.Context, req ctrl.Request) (*v1alpha1.TSymbiote, error) {
	t := &v1alpha1.TSymbiote{}
	if err := r.Client.Get(ctx, req.NamespacedName, t); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return t, nil
}

// ensureFinalizer adds the finalizer that deletes the WebUI's node.
func (r *TSymbioteReconciler) ensureFinalizer(ctx context.Context, t *v1alpha1.TSymbiote) error {
	if controllerutil.ContainsFinalizer(t, TSymbioteFinalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(t.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(t, TSymbioteFinalizer)
	if err := r.Client.Patch(ctx, t, patch); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	return nil
}

// observedStatus is t's status with what follows from its spec alone.
func observedStatus(t *v1alpha1.TSymbiote) *v1alpha1.TSymbioteStatus {
	status := t.Status.DeepCopy()
	status.ObservedGeneration = t.Generation
	status.Hostname = t.EffectiveHostname()
	status.StatefulSetName = StatefulSetName(t)
	return status
}

// setReadiness reports the WebUI ready once its StatefulSet runs the
// current template on every replica.
func setReadiness(status *v1alpha1.TSymbioteStatus, t *v1alpha1.TSymbiote, sts *appsv1.StatefulSet) {
	status.ReadyReplicas = sts.Status.ReadyReplicas
	want := int32(1)
	if sts.Spec.Replicas != nil {
		want = *sts.Spec.Replicas
	}
	if sts.Status.ObservedGeneration >= sts.Generation && sts.Status.ReadyReplicas >= want && sts.Status.UpdatedReplicas >= want {
		setReady(status, t, metav1.ConditionTrue, v1alpha1.ReasonReady, "the WebUI StatefulSet has a ready replica")
		return
	}
	setReady(status, t, metav1.ConditionFalse, v1alpha1.ReasonProgressing,
		fmt.Sprintf("waiting for the WebUI StatefulSet: %d/%d ready", sts.Status.ReadyReplicas, want))
}

func setReady(s *v1alpha1.TSymbioteStatus, t *v1alpha1.TSymbiote, st metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&s.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: st, Reason: reason, Message: msg, ObservedGeneration: t.Generation,
	})
}

// updateStatus writes status only when it differs from what is stored, so
// that a steady state makes no writes (and no new reconciles). A Ready
// condition that changes reason is also reported as an Event, a Warning
// when the reason is a problem to fix.
func (r *TSymbioteReconciler) updateStatus(ctx context.Context, t *v1alpha1.TSymbiote, status *v1alpha1.TSymbioteStatus) error {
	if equality.Semantic.DeepEqual(&t.Status, status) {
		return nil
	}
	before := apimeta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady)
	after := apimeta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady)
	t.Status = *status
	if err := r.Client.Status().Update(ctx, t); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	if r.Recorder != nil && after != nil && (before == nil || before.Reason != after.Reason || before.Message != after.Message) {
		r.Recorder.Event(t, eventType(after), after.Reason, after.Message)
	}
	return nil
}

// eventType is Normal for a Ready condition on its way to True and
// Warning for one that needs someone to act.
func eventType(c *metav1.Condition) string {
	switch c.Reason {
	case v1alpha1.ReasonReady, v1alpha1.ReasonProgressing:
		return corev1.EventTypeNormal
	}
	return corev1.EventTypeWarning
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
// message when it is unusable. An error reading it is returned as is: a
// transient failure of the API server says nothing about the spec.
func (r *TSymbioteReconciler) validate(ctx context.Context, t *v1alpha1.TSymbiote) (hash, reason, msg string, err error) {
	s := &corev1.Secret{}
	name := t.Spec.AuthSecretRef.Name
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return "", v1alpha1.ReasonAuthSecretMissing, fmt.Sprintf("spec.authSecretRef: secret %q not found", name), nil
		}
		return "", "", "", fmt.Errorf("reading auth secret %q: %w", name, err)
	}
	sets := authKeyKeys
	if t.GeneratesAuth() {
		sets = generateAuthKeys
	}
	for _, set := range sets {
		if slices.IndexFunc(set, func(k string) bool { return len(s.Data[k]) == 0 }) < 0 {
			return dataHash(s.Data), "", "", nil
		}
	}
	var want []string
	for _, set := range sets {
		want = append(want, strings.Join(set, "+"))
	}
	return "", v1alpha1.ReasonAuthSecretInvalid, fmt.Sprintf("spec.authSecretRef: secret %q must hold %s", name, strings.Join(want, ", or ")), nil
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

// finalize deletes the WebUI's node from the control plane, then releases
// the TSymbiote.
func (r *TSymbioteReconciler) finalize(ctx context.Context, t *v1alpha1.TSymbiote) error {
	if !controllerutil.ContainsFinalizer(t, TSymbioteFinalizer) {
		return nil
	}
	if err := r.deleteWebUINodes(ctx, t); err != nil {
		return err
	}
	patch := client.MergeFromWithOptions(t.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(t, TSymbioteFinalizer)
	if err := r.Client.Patch(ctx, t, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("removing finalizer: %w", err)
	}
	return nil
}

// deleteWebUINodes deletes the nodes tagged as the WebUI's with its
// hostname. Without a control plane there is nothing to delete.
func (r *TSymbioteReconciler) deleteWebUINodes(ctx context.Context, t *v1alpha1.TSymbiote) error {
	if r.ControlPlane == nil {
		return nil
	}
	host := t.EffectiveHostname()
	devs, err := r.ControlPlane.ListDevices(ctx, controlplane.ListOptions{Tag: contract.TagWebUI})
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
	return nil
}
