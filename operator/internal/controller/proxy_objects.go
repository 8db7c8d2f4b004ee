package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/proxyconfig"
	"tsymbiote.dhouti.dev/proto/contract"
)

// Labels and annotations on the objects made for a proxy. Owner references
// cannot point across namespaces (the proxy lives in the operator's, what
// it serves anywhere), so every made object carries its proxy's name and
// its owner's identity, and is found and deleted by label.
const (
	// LabelProxy names the proxy an object was made for.
	LabelProxy = "tsymbiote.dhouti.dev/proxy"
	// LabelOwnerKind, LabelOwnerNamespace and LabelOwnerUID identify what
	// the proxy serves (Service, Ingress, ProxyGroup, SubnetRouter).
	LabelOwnerKind      = "tsymbiote.dhouti.dev/owner-kind"
	LabelOwnerNamespace = "tsymbiote.dhouti.dev/owner-namespace"
	LabelOwnerUID       = "tsymbiote.dhouti.dev/owner-uid"
	// AnnotationOwnerName is the owner's name (which may be longer than a
	// label value can be).
	AnnotationOwnerName = "tsymbiote.dhouti.dev/owner-name"

	annotationConfigHash = "tsymbiote.dhouti.dev/config-hash"
	annotationKeyTags    = "tsymbiote.dhouti.dev/key-tags"
	annotationAuthKeyID  = "tsymbiote.dhouti.dev/auth-key-id"
	authKeyDataKey       = "TS_AUTHKEY"

	proxyContainerName = "proxy"
	proxyMetricsPort   = 9002
	// ProxyRunAsUser is the uid the proxy runs as: the restricted Pod
	// Security Standard wants a non-root user the kubelet can verify.
	ProxyRunAsUser = 65532
)

// ProxyOptions are the operator-wide settings of every proxy.
type ProxyOptions struct {
	// Namespace is the operator's, where the proxies run.
	Namespace       string
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// Resources are the proxy container's defaults; an owner's
	// annotations override them.
	Resources corev1.ResourceRequirements
	// Env is added to the proxy container's environment (e.g.
	// TS_DEBUG_USE_DERP_HTTP=1 for a test Headscale).
	Env []corev1.EnvVar
	// DefaultTags are the tags of a proxy whose owner names none.
	DefaultTags []string
	// KeyExpiry is the lifetime of a proxy's auth key; 1h when zero.
	KeyExpiry time.Duration
}

func (o *ProxyOptions) keyExpiry() time.Duration {
	if o.KeyExpiry > 0 {
		return o.KeyExpiry
	}
	return time.Hour
}

// proxyOwner is what a proxy serves.
type proxyOwner struct {
	Kind, Namespace, Name string
	UID                   types.UID
}

// proxySpec is one proxy as its owner wants it.
type proxySpec struct {
	Name  string // of every made object; see proxyName
	Owner proxyOwner
	// Tags are the node's tags. They go into its auth key, not into
	// Config.Tags: Headscale refuses a node that registers with a
	// pre-auth key and also requests tags, and a tagged key alone tags
	// the node on Tailscale as on Headscale.
	Tags   []string
	Config proxyconfig.Config // Generation is filled in by ensure
	// Files are copied into the config Secret beside config.json (the TLS
	// PEMs its HTTP.TLS entries name).
	Files     map[string][]byte
	Resources *corev1.ResourceRequirements // nil: ProxyOptions.Resources
}

// proxyState is what the proxy reported on its state Secret, and whether
// it is ready.
type proxyState struct {
	FQDN     string
	IPs      []netip.Addr
	DeviceID string
	// Applied is the config generation the proxy applied last; Want the
	// one it should.
	Applied, Want int64
	PodReady      bool
}

// Ready reports whether the proxy is on the tailnet serving the current
// config.
func (s *proxyState) Ready() bool {
	return s.FQDN != "" && len(s.IPs) > 0 && s.DeviceID != "" && s.Applied >= s.Want && s.PodReady
}

// notReadyMessage says what a proxy that is not Ready waits for.
func (s *proxyState) notReadyMessage() string {
	switch {
	case !s.PodReady:
		return "waiting for the proxy pod to be ready"
	case s.DeviceID == "" || s.FQDN == "":
		return "waiting for the proxy to join the tailnet"
	case s.Applied < s.Want:
		return fmt.Sprintf("waiting for the proxy to apply config generation %d (applied %d)", s.Want, s.Applied)
	}
	return "waiting for the proxy"
}

// proxies makes, reads and removes proxies. Its methods are safe for
// concurrent use on different proxies; reconcilers of one owner kind never
// work on one proxy at once (the workqueue keys by owner).
type proxies struct {
	client client.Client
	cp     controlplane.Client
	opts   ProxyOptions
	now    func() time.Time
}

// newProxies is the proxy maker every exposure controller uses; now is
// time.Now when nil (tests inject a clock).
func newProxies(c client.Client, cp controlplane.Client, opts ProxyOptions, now func() time.Time) *proxies {
	if now == nil {
		now = time.Now
	}
	return &proxies{client: c, cp: cp, opts: opts, now: now}
}

// proxyName is the name of the objects made for a proxy: prefix, the
// owner's namespace and name as far as they fit, and a hash of all of it
// (so that distinct owners never share a name), at most 52 characters so
// that "-config" and the Deployment's pod names still fit in 63.
func proxyName(prefix, namespace, name string) string {
	sum := sha256.Sum256([]byte(prefix + "/" + namespace + "/" + name))
	h := hex.EncodeToString(sum[:])[:6]
	base := prefix + "-" + namespace + "-" + name
	var b strings.Builder
	for _, r := range base {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := b.String()
	if len(s) > 45 {
		s = s[:45]
	}
	return strings.TrimRight(s, "-") + "-" + h
}

func configSecretName(proxy string) string { return proxy + "-config" }
func stateSecretName(proxy string) string  { return proxy + "-state" }
func authSecretName(proxy string) string   { return proxy + "-auth" }

func (p *proxies) labels(s *proxySpec) map[string]string {
	return map[string]string{
		contract.LabelManagedBy: ManagedByValue,
		LabelProxy:              s.Name,
		LabelOwnerKind:          s.Owner.Kind,
		LabelOwnerNamespace:     s.Owner.Namespace,
		LabelOwnerUID:           string(s.Owner.UID),
	}
}

func (p *proxies) meta(s *proxySpec, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: name, Namespace: p.opts.Namespace, Labels: p.labels(s),
		Annotations: map[string]string{AnnotationOwnerName: s.Owner.Name},
	}
}

// ensure makes or updates every object of s, in an order that converges
// after a crash at any step, and returns what the proxy reports.
//
// Phases: the auth key (re-minted, and the node replaced, when the tags
// change), the state Secret, the config Secret, RBAC, the Deployment,
// then the proxy's report.
func (p *proxies) ensure(ctx context.Context, s *proxySpec) (*proxyState, error) {
	keyID, err := p.ensureAuth(ctx, s)
	if err != nil {
		return nil, err
	}
	state, err := p.ensureStateSecret(ctx, s)
	if err != nil {
		return nil, err
	}
	gen, err := p.ensureConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := p.ensureRBAC(ctx, s); err != nil {
		return nil, err
	}
	dep, err := p.ensureDeployment(ctx, s, keyID)
	if err != nil {
		return nil, err
	}
	st := readState(state)
	st.Want = gen
	st.PodReady = dep.Status.ReadyReplicas > 0 && dep.Status.ObservedGeneration >= dep.Generation && dep.Status.UpdatedReplicas > 0
	return st, nil
}

// readState is what the proxy annotated its state Secret with.
func readState(s *corev1.Secret) *proxyState {
	a := s.Annotations
	st := &proxyState{FQDN: strings.TrimSuffix(a[proxyconfig.AnnotationFQDN], "."), DeviceID: a[proxyconfig.AnnotationDeviceID]}
	for f := range strings.SplitSeq(a[proxyconfig.AnnotationIPs], ",") {
		if ip, err := netip.ParseAddr(strings.TrimSpace(f)); err == nil {
			st.IPs = append(st.IPs, ip)
		}
	}
	st.Applied, _ = strconv.ParseInt(a[proxyconfig.AnnotationConfigGeneration], 10, 64)
	return st
}

func (p *proxies) tags(s *proxySpec) []string {
	if len(s.Tags) > 0 {
		return s.Tags
	}
	return p.opts.DefaultTags
}

// ensureAuth keeps the proxy's auth key Secret and returns the key's ID.
// It mints a key when there is none, when the tags changed (a node's tags
// come from the key it registered with, so the node is deleted and
// re-registers), and when the key expired before the proxy used it.
func (p *proxies) ensureAuth(ctx context.Context, s *proxySpec) (string, error) {
	tags := strings.Join(p.tags(s), ",")
	sec := &corev1.Secret{}
	err := p.client.Get(ctx, client.ObjectKey{Namespace: p.opts.Namespace, Name: authSecretName(s.Name)}, sec)
	if err != nil && !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("reading auth secret: %w", err)
	}
	exists := err == nil
	if exists {
		expired := false
		if t, err := time.Parse(time.RFC3339, sec.Annotations[AnnotationExpires]); err == nil && !p.now().Before(t) {
			expired = true
		}
		switch {
		case sec.Annotations[annotationKeyTags] != tags:
			// Re-tag: the old node goes, the state with it.
			if err := p.forgetNode(ctx, s.Name); err != nil {
				return "", err
			}
		case expired:
			state := &corev1.Secret{}
			err := p.client.Get(ctx, client.ObjectKey{Namespace: p.opts.Namespace, Name: stateSecretName(s.Name)}, state)
			if err == nil && state.Annotations[proxyconfig.AnnotationDeviceID] != "" {
				return sec.Annotations[AnnotationKeyID], nil // used; the node keeps its state
			}
		default:
			return sec.Annotations[AnnotationKeyID], nil
		}
	}
	key, err := p.cp.CreateAuthKey(ctx, controlplane.AuthKeyRequest{
		Tags: p.tags(s), Preauthorized: true, Expiry: p.opts.keyExpiry(),
		Description: "tsymbiote proxy " + s.Name,
	})
	if err != nil {
		controlPlaneErrors.WithLabelValues("create_key").Inc()
		return "", fmt.Errorf("minting the proxy's auth key for tags %s: %w", tags, err)
	}
	proxyKeysMinted.Inc()
	meta := p.meta(s, authSecretName(s.Name))
	meta.Annotations[AnnotationKeyID] = key.ID
	meta.Annotations[AnnotationExpires] = key.Expires.UTC().Format(time.RFC3339)
	meta.Annotations[annotationKeyTags] = tags
	want := &corev1.Secret{ObjectMeta: meta, Data: map[string][]byte{authKeyDataKey: []byte(key.Key.Reveal())}}
	if !exists {
		if err := p.client.Create(ctx, want); err != nil {
			return "", fmt.Errorf("creating auth secret: %w", err)
		}
		return key.ID, nil
	}
	sec.Labels, sec.Annotations, sec.Data = want.Labels, want.Annotations, want.Data
	if err := p.client.Update(ctx, sec); err != nil {
		return "", fmt.Errorf("updating auth secret: %w", err)
	}
	return key.ID, nil
}

// forgetNode deletes the proxy's node from the control plane and empties
// its state Secret, so that the proxy registers anew with its next key.
func (p *proxies) forgetNode(ctx context.Context, proxy string) error {
	state := &corev1.Secret{}
	err := p.client.Get(ctx, client.ObjectKey{Namespace: p.opts.Namespace, Name: stateSecretName(proxy)}, state)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading state secret: %w", err)
	}
	if err := p.deleteDevice(ctx, state.Annotations[proxyconfig.AnnotationDeviceID]); err != nil {
		return err
	}
	if err := p.client.Delete(ctx, state); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting state secret: %w", err)
	}
	return nil
}

func (p *proxies) deleteDevice(ctx context.Context, id string) error {
	if id == "" {
		return nil
	}
	if err := p.cp.DeleteDevice(ctx, id); err != nil && !errors.Is(err, controlplane.ErrNotFound) {
		controlPlaneErrors.WithLabelValues("delete_device").Inc()
		return fmt.Errorf("deleting the proxy's node %s: %w", id, err)
	}
	proxyNodesDeleted.Inc()
	log.FromContext(ctx).Info("deleted proxy node", "node", id)
	return nil
}

// ensureStateSecret creates the Secret the proxy keeps its node in; its
// content is the proxy's.
func (p *proxies) ensureStateSecret(ctx context.Context, s *proxySpec) (*corev1.Secret, error) {
	sec := &corev1.Secret{}
	err := p.client.Get(ctx, client.ObjectKey{Namespace: p.opts.Namespace, Name: stateSecretName(s.Name)}, sec)
	if err == nil {
		return sec, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading state secret: %w", err)
	}
	sec = &corev1.Secret{ObjectMeta: p.meta(s, stateSecretName(s.Name))}
	if err := p.client.Create(ctx, sec); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating state secret: %w", err)
	}
	return sec, nil
}

// configHash identifies a config and its files, without the generation.
func configHash(c proxyconfig.Config, files map[string][]byte) (string, error) {
	c.Generation = 0
	b, err := proxyconfig.Marshal(&c)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write(b)
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "\x00%s\x00%d\x00", k, len(files[k]))
		h.Write(files[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// ensureConfig writes the config Secret, with a generation one higher than
// the stored one whenever the content changes, and returns the generation.
func (p *proxies) ensureConfig(ctx context.Context, s *proxySpec) (int64, error) {
	hash, err := configHash(s.Config, s.Files)
	if err != nil {
		return 0, fmt.Errorf("proxy config: %w", err)
	}
	sec := &corev1.Secret{}
	err = p.client.Get(ctx, client.ObjectKey{Namespace: p.opts.Namespace, Name: configSecretName(s.Name)}, sec)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, fmt.Errorf("reading config secret: %w", err)
	}
	exists := err == nil
	var gen int64 = 1
	if exists {
		old, perr := proxyconfig.Parse(sec.Data[proxyconfig.ConfigKey])
		if perr == nil {
			gen = old.Generation
			if sec.Annotations[annotationConfigHash] == hash {
				return gen, nil
			}
			gen++
		}
	}
	c := s.Config
	c.Generation = gen
	b, err := proxyconfig.Marshal(&c)
	if err != nil {
		return 0, fmt.Errorf("proxy config: %w", err)
	}
	data := maps.Clone(s.Files)
	if data == nil {
		data = map[string][]byte{}
	}
	data[proxyconfig.ConfigKey] = b
	meta := p.meta(s, configSecretName(s.Name))
	meta.Annotations[annotationConfigHash] = hash
	if !exists {
		if err := p.client.Create(ctx, &corev1.Secret{ObjectMeta: meta, Data: data}); err != nil {
			return 0, fmt.Errorf("creating config secret: %w", err)
		}
		return gen, nil
	}
	sec.Labels, sec.Annotations, sec.Data = meta.Labels, meta.Annotations, data
	if err := p.client.Update(ctx, sec); err != nil {
		return 0, fmt.Errorf("updating config secret: %w", err)
	}
	return gen, nil
}

// ensureRBAC applies the proxy's ServiceAccount, and a Role that lets it
// read its config Secret and write its state Secret, and nothing else.
func (p *proxies) ensureRBAC(ctx context.Context, s *proxySpec) error {
	sa := &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: p.meta(s, s.Name)}
	role := &rbacv1.Role{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: p.meta(s, s.Name),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{configSecretName(s.Name)}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{stateSecretName(s.Name)}, Verbs: []string{"get", "update", "patch"}},
		},
	}
	rb := &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: p.meta(s, s.Name),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: s.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: s.Name, Namespace: p.opts.Namespace}},
	}
	for _, obj := range []client.Object{sa, role, rb} {
		if _, err := p.apply(ctx, obj); err != nil {
			return err
		}
	}
	return nil
}

// apply server-side applies obj and returns the object as stored (the
// response, not the cache, which may not hold a new object yet).
func (p *proxies) apply(ctx context.Context, obj client.Object) (*unstructured.Unstructured, error) {
	u, err := applyObject(obj)
	if err != nil {
		return nil, err
	}
	if err := p.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return nil, fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return u, nil
}

// ensureDeployment applies the proxy's Deployment and returns it as
// stored.
func (p *proxies) ensureDeployment(ctx context.Context, s *proxySpec, keyID string) (*appsv1.Deployment, error) {
	u, err := p.apply(ctx, p.deployment(s, keyID))
	if err != nil {
		return nil, err
	}
	dep := &appsv1.Deployment{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, dep); err != nil {
		return nil, err
	}
	return dep, nil
}

// deployment is the proxy's Deployment: one replica (one node state),
// replaced rather than rolled so that two pods never share the node.
func (p *proxies) deployment(s *proxySpec, keyID string) *appsv1.Deployment {
	sel := map[string]string{"app.kubernetes.io/name": "tsymbiote-proxy", LabelProxy: s.Name}
	podLabels := maps.Clone(sel)
	podLabels[contract.LabelManagedBy] = ManagedByValue
	res := p.opts.Resources
	if s.Resources != nil {
		res = *s.Resources
	}
	env := []corev1.EnvVar{
		{Name: proxyconfig.EnvPodNamespace, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: proxyconfig.EnvConfigSecret, Value: configSecretName(s.Name)},
		{Name: proxyconfig.EnvStateSecret, Value: stateSecretName(s.Name)},
		{Name: proxyconfig.EnvAuthKey, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: authSecretName(s.Name)}, Key: authKeyDataKey,
		}}},
	}
	if u := p.cp.ControlURL(); u != "" {
		env = append(env, corev1.EnvVar{Name: proxyconfig.EnvControlURL, Value: u})
	}
	env = append(env, p.opts.Env...)
	c := corev1.Container{
		Name:            proxyContainerName,
		Image:           p.opts.Image,
		ImagePullPolicy: p.opts.ImagePullPolicy,
		Env:             env,
		Resources:       res,
		Ports:           []corev1.ContainerPort{{Name: "metrics", ContainerPort: proxyMetricsPort, Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("metrics")}},
			PeriodSeconds: 2, FailureThreshold: 3,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("metrics")}},
			PeriodSeconds: 20, FailureThreshold: 3,
		},
		VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
		// The restricted Pod Security Standard: the proxy's tailnet
		// networking is in userspace and needs no privilege.
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](ProxyRunAsUser),
			RunAsGroup:               ptr.To[int64](ProxyRunAsUser),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: p.meta(s, s.Name),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels: podLabels,
					// A new key (new tags, or a first key that expired
					// unused) reaches the proxy's environment by a new pod.
					Annotations: map[string]string{annotationAuthKeyID: keyID},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName: s.Name,
					Containers:         []corev1.Container{c},
					Volumes:            []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}
}

// madeKinds are the kinds of every object made for a proxy, in the order
// remove deletes them: the pod first, so that it stops writing state.
func madeKinds() []client.ObjectList {
	return []client.ObjectList{
		&appsv1.DeploymentList{}, &rbacv1.RoleBindingList{}, &rbacv1.RoleList{},
		&corev1.ServiceAccountList{}, &corev1.SecretList{},
	}
}

// remove deletes the proxy's node from the control plane, then every
// object made for it. It is idempotent: a crash at any step leaves what
// the next call finishes.
func (p *proxies) remove(ctx context.Context, proxy string) error {
	state := &corev1.Secret{}
	err := p.client.Get(ctx, client.ObjectKey{Namespace: p.opts.Namespace, Name: stateSecretName(proxy)}, state)
	switch {
	case err == nil:
		if err := p.deleteDevice(ctx, state.Annotations[proxyconfig.AnnotationDeviceID]); err != nil {
			return err
		}
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("reading state secret: %w", err)
	}
	sel := client.MatchingLabels{LabelProxy: proxy, contract.LabelManagedBy: ManagedByValue}
	for _, l := range madeKinds() {
		if err := p.client.List(ctx, l, client.InNamespace(p.opts.Namespace), sel); err != nil {
			return fmt.Errorf("listing proxy %s objects: %w", proxy, err)
		}
		items, err := listItems(l)
		if err != nil {
			return err
		}
		for _, obj := range items {
			if err := p.client.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("deleting %T %s: %w", obj, obj.GetName(), err)
			}
		}
	}
	return nil
}

// removeAllOf removes every proxy made for the owner of kind with uid,
// with its node.
func (p *proxies) removeAllOf(ctx context.Context, kind string, uid types.UID) error {
	names, err := p.proxiesOf(ctx, kind, uid)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := p.remove(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// proxiesOf lists the names of the proxies made for owners of kind,
// optionally only for one owner UID.
func (p *proxies) proxiesOf(ctx context.Context, kind string, uid types.UID) ([]string, error) {
	sel := client.MatchingLabels{contract.LabelManagedBy: ManagedByValue, LabelOwnerKind: kind}
	if uid != "" {
		sel[LabelOwnerUID] = string(uid)
	}
	var names []string
	for _, l := range []client.ObjectList{&appsv1.DeploymentList{}, &corev1.SecretList{}} {
		if err := p.client.List(ctx, l, client.InNamespace(p.opts.Namespace), sel); err != nil {
			return nil, fmt.Errorf("listing %s proxies: %w", kind, err)
		}
		items, err := listItems(l)
		if err != nil {
			return nil, err
		}
		for _, o := range items {
			if n := o.GetLabels()[LabelProxy]; n != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

func listItems(l client.ObjectList) ([]client.Object, error) {
	var out []client.Object
	switch l := l.(type) {
	case *appsv1.DeploymentList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *rbacv1.RoleBindingList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *rbacv1.RoleList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *corev1.ServiceAccountList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *corev1.SecretList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	default:
		return nil, fmt.Errorf("listItems: unexpected %T", l)
	}
	return out, nil
}

// ParseTags parses a tags annotation (comma separated), naming the bad tag.
func ParseTags(s string) ([]string, error) {
	var out []string
	for t := range strings.SplitSeq(s, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if err := proxyconfig.ValidTag(t); err != nil {
			return nil, err
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out, nil
}
