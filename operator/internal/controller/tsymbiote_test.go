package controller_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"tsymbiote.dhouti.dev/operator/api/v1alpha1"
	"tsymbiote.dhouti.dev/operator/internal/controller"
	"tsymbiote.dhouti.dev/operator/internal/setup"
	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	"tsymbiote.dhouti.dev/operator/internal/testenv"
)

func readyCondition(t *v1alpha1.TSymbiote) *metav1.Condition {
	return apimeta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady)
}

// TestTSymbiote reconciles a TSymbiote against the real API server: the
// StatefulSet carries the requested image, hostname, allowed users and pod
// overrides; the status follows the StatefulSet's ready replicas and is not
// rewritten when nothing changed; a missing auth Secret is reported.
func TestTSymbiote(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	env.StartManager(t, setup.Config{
		Adapter:          &sidecar.Config{Image: "tsymbiote/adapter:test"},
		TSymbiote:        true,
		TSymbioteRecheck: time.Second,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client
	ns := env.Namespace(t, "tsymbiote", nil)

	if err := c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tsymbiote-webui"},
		StringData: map[string]string{"TS_OAUTH_CLIENT_ID": "id", "TS_OAUTH_CLIENT_SECRET": "secret"},
	}); err != nil {
		t.Fatal(err)
	}
	ts := &v1alpha1.TSymbiote{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tsymbiote"},
		Spec: v1alpha1.TSymbioteSpec{
			AuthSecretRef: corev1.LocalObjectReference{Name: "tsymbiote-webui"},
			Image:         "tsymbiote/webui:v1",
			Hostname:      "debugger",
			AllowedUsers:  []string{"alice@example.com", "bob@github"},
			Pod: &v1alpha1.PodOverrides{
				Labels:       map[string]string{"team": "net"},
				Annotations:  map[string]string{"note": "hi"},
				NodeSelector: map[string]string{"kubernetes.io/os": "linux"},
				Tolerations:  []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "debug", Effect: corev1.TaintEffectNoSchedule}},
				Resources: &corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
				},
				Env: []corev1.EnvVar{{Name: "TSNET_FORCE_LOGIN", Value: "1"}},
			},
		},
	}
	if err := c.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}

	sts := &appsv1.StatefulSet{}
	testenv.Eventually(t, 30*time.Second, "statefulset", func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tsymbiote"}, sts)
	})
	if !metav1.IsControlledBy(sts, ts) {
		t.Errorf("statefulset owners %+v", sts.OwnerReferences)
	}
	if *sts.Spec.Replicas != 1 {
		t.Errorf("replicas %d", *sts.Spec.Replicas)
	}
	pt := sts.Spec.Template
	wc := pt.Spec.Containers[0]
	wantArgs := []string{"--hostname=debugger", "--health-addr=:8081", "--generate-auth=true", "--allowed-users=alice@example.com,bob@github"}
	if wc.Image != "tsymbiote/webui:v1" || !slices.Equal(wc.Args, wantArgs) {
		t.Errorf("container image %q args %q, want tsymbiote/webui:v1 %q", wc.Image, wc.Args, wantArgs)
	}
	if len(wc.EnvFrom) != 1 || wc.EnvFrom[0].SecretRef.Name != "tsymbiote-webui" {
		t.Errorf("envFrom %+v", wc.EnvFrom)
	}
	if !slices.ContainsFunc(wc.Env, func(e corev1.EnvVar) bool { return e.Name == "TSNET_FORCE_LOGIN" && e.Value == "1" }) {
		t.Errorf("env %+v lacks the override", wc.Env)
	}
	if wc.Resources.Requests.Memory().String() != "64Mi" {
		t.Errorf("resources %+v", wc.Resources)
	}
	if pt.Labels["team"] != "net" || pt.Labels["app.kubernetes.io/instance"] != "tsymbiote" || pt.Annotations["note"] != "hi" {
		t.Errorf("template metadata %+v", pt.ObjectMeta)
	}
	if pt.Spec.NodeSelector["kubernetes.io/os"] != "linux" || len(pt.Spec.Tolerations) != 1 {
		t.Errorf("scheduling overrides lost: %+v %+v", pt.Spec.NodeSelector, pt.Spec.Tolerations)
	}

	var got v1alpha1.TSymbiote
	testenv.Eventually(t, 30*time.Second, "status Progressing", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(ts), &got); err != nil {
			return err
		}
		if cond := readyCondition(&got); cond == nil || cond.Reason != v1alpha1.ReasonProgressing {
			return fmt.Errorf("ready condition %+v", cond)
		}
		return nil
	})
	if got.Status.ObservedGeneration != got.Generation || got.Status.Hostname != "debugger" || got.Status.StatefulSetName != "tsymbiote" {
		t.Errorf("status %+v", got.Status)
	}

	// No kubelet runs here: report the replica ready the way the
	// StatefulSet controller would.
	sts.Status = appsv1.StatefulSetStatus{
		ObservedGeneration: sts.Generation, Replicas: 1, ReadyReplicas: 1, CurrentReplicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1,
	}
	if err := c.Status().Update(ctx, sts); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "status Ready", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(ts), &got); err != nil {
			return err
		}
		if cond := readyCondition(&got); cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("ready condition %+v", cond)
		}
		return nil
	})
	t.Logf("Ready: %+v, readyReplicas %d", *readyCondition(&got), got.Status.ReadyReplicas)

	// A reconcile with nothing new must not write the status again.
	rv := got.ResourceVersion
	stsPatch := client.MergeFrom(sts.DeepCopy())
	sts.Annotations = map[string]string{"poke": "1"}
	if err := c.Patch(ctx, sts, stsPatch); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := c.Get(ctx, client.ObjectKeyFromObject(ts), &got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != rv {
		t.Errorf("TSymbiote rewritten without a change: resourceVersion %s -> %s (status %+v)", rv, got.ResourceVersion, got.Status)
	}

	// A spec change updates the StatefulSet and observedGeneration.
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.Image = "tsymbiote/webui:v2"
	if err := c.Patch(ctx, &got, patch); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "image rolled", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(sts), sts); err != nil {
			return err
		}
		if img := sts.Spec.Template.Spec.Containers[0].Image; img != "tsymbiote/webui:v2" {
			return fmt.Errorf("image %s", img)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(ts), &got); err != nil {
			return err
		}
		if got.Status.ObservedGeneration != got.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", got.Status.ObservedGeneration, got.Generation)
		}
		return nil
	})

	t.Run("changed credentials roll the WebUI", func(t *testing.T) {
		before := sts.Spec.Template.Annotations[controller.AnnotationAuthHash]
		if before == "" {
			t.Fatalf("no %s on the pod template", controller.AnnotationAuthHash)
		}
		s := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tsymbiote-webui"}, s); err != nil {
			t.Fatal(err)
		}
		s.Data["TS_OAUTH_CLIENT_SECRET"] = []byte("rotated")
		if err := c.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "pod template rolled", func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(sts), sts); err != nil {
				return err
			}
			if sts.Spec.Template.Annotations[controller.AnnotationAuthHash] == before {
				return fmt.Errorf("auth hash unchanged")
			}
			return nil
		})
	})

	t.Run("missing auth secret", func(t *testing.T) {
		bad := &v1alpha1.TSymbiote{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nosecret"},
			Spec:       v1alpha1.TSymbioteSpec{AuthSecretRef: corev1.LocalObjectReference{Name: "absent"}, Image: "x"},
		}
		if err := c.Create(ctx, bad); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "AuthSecretMissing", func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(bad), bad); err != nil {
				return err
			}
			if cond := readyCondition(bad); cond == nil || cond.Reason != v1alpha1.ReasonAuthSecretMissing {
				return fmt.Errorf("ready condition %+v", cond)
			}
			return nil
		})
		t.Logf("condition: %s", readyCondition(bad).Message)
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "nosecret"}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
			t.Errorf("statefulset made without credentials: %v", err)
		}
	})

	t.Run("deletion releases the finalizer", func(t *testing.T) {
		if !slices.Contains(got.Finalizers, controller.TSymbioteFinalizer) {
			t.Fatalf("finalizers %v", got.Finalizers)
		}
		if err := c.Delete(ctx, &got); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "TSymbiote gone", func() error {
			err := c.Get(ctx, client.ObjectKeyFromObject(&got), &v1alpha1.TSymbiote{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there: %w", err)
		})
	})
}

// TestTSymbioteValidation shows the API server refusing invalid resources
// with messages that name the field, from the CRD schema and its CEL rules.
func TestTSymbioteValidation(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	ns := env.Namespace(t, "invalid", nil)
	valid := func() *v1alpha1.TSymbiote {
		return &v1alpha1.TSymbiote{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "t"},
			Spec: v1alpha1.TSymbioteSpec{
				AuthSecretRef: corev1.LocalObjectReference{Name: "s"},
				Image:         "tsymbiote/webui:v1",
			},
		}
	}
	if err := env.Client.Create(ctx, valid(), client.DryRunAll); err != nil {
		t.Fatalf("valid resource refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*v1alpha1.TSymbiote)
		want   string
	}{
		{"bad hostname", func(t *v1alpha1.TSymbiote) { t.Spec.Hostname = "Bad_Host" }, "spec.hostname"},
		{"empty image", func(t *v1alpha1.TSymbiote) { t.Spec.Image = "" }, "spec.image"},
		{"image with a space", func(t *v1alpha1.TSymbiote) { t.Spec.Image = "a b" }, "spec.image must not contain spaces"},
		{"allowed user without @", func(t *v1alpha1.TSymbiote) { t.Spec.AllowedUsers = []string{"alice@example.com", "bob"} }, "spec.allowedUsers[1]"},
		{"duplicate allowed user", func(t *v1alpha1.TSymbiote) { t.Spec.AllowedUsers = []string{"a@b", "a@b"} }, "spec.allowedUsers[1]"},
		{"bad pull policy", func(t *v1alpha1.TSymbiote) { t.Spec.ImagePullPolicy = "Sometimes" }, "spec.imagePullPolicy"},
		{"reserved pod label", func(t *v1alpha1.TSymbiote) {
			t.Spec.Pod = &v1alpha1.PodOverrides{Labels: map[string]string{"app.kubernetes.io/name": "x"}}
		}, "spec.pod.labels must not set app.kubernetes.io/"},
		{"name that is not a hostname", func(t *v1alpha1.TSymbiote) { t.Name = "web.ui" }, "spec.hostname is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := valid()
			tc.mutate(obj)
			err := env.Client.Create(ctx, obj, client.DryRunAll)
			if err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create = %v, want Invalid naming %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
	t.Run("samples are accepted", func(t *testing.T) {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tsymbiote"}}); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(env.Root, "operator", "config", "samples", "tsymbiote_v1alpha1_tsymbiote.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := d.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatal(err)
			}
			if err := env.Client.Create(ctx, u, client.DryRunAll); err != nil {
				t.Errorf("sample %s %s refused: %v", u.GetKind(), u.GetName(), err)
			}
		}
	})
	// A hostname makes a dotted name acceptable.
	obj := valid()
	obj.Name, obj.Spec.Hostname = "web.ui", "webui"
	if err := env.Client.Create(ctx, obj, client.DryRunAll); err != nil {
		t.Fatalf("dotted name with a hostname refused: %v", err)
	}
}
