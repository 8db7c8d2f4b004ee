package controller_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/controller"
	"tsymbiote.dhouti.dev/operator/internal/setup"
	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	"tsymbiote.dhouti.dev/operator/internal/testenv"
	"tsymbiote.dhouti.dev/proto/contract"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

var labelled = map[string]string{contract.LabelSecretInjection: contract.InjectionEnabled}

func newPod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labelled},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "tailscale", Image: "tailscale/tailscale:test",
		}}},
	}
}

// TestPodKeys runs the webhook and the secrets controller against a real
// API server, kube-controller-manager (for owner-reference garbage
// collection) and Headscale: an injected pod gets a Secret with a key that
// joins a tsnet node tagged tag:tsymbiote-adapter; an unused key is
// re-minted before it expires; deleting the pod removes the node from
// Headscale and, through the garbage collector, the Secret.
func TestPodKeys(t *testing.T) {
	hs := headscaletest.Start(t, headscaletest.Options{})
	cp, err := controlplane.New(logger.Discard, controlplane.Config{HeadscaleURL: hs.URL, HeadscaleAPIKey: controlplane.Secret(hs.APIKey)})
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{Webhook: true})
	env.ControllerManager(t, "garbagecollector")
	var skew atomic.Int64 // lets the test move the controller's clock forward
	pk := &controller.PodKeyReconciler{
		KeyExpiry:   10 * time.Minute,
		Poll:        500 * time.Millisecond,
		GiveUpAfter: 3 * time.Second,
		Now:         func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
	}
	env.StartManager(t, setup.Config{
		ControlPlane: cp,
		Adapter:      &sidecar.Config{Image: "tsymbiote/adapter:test"},
		PodKey:       pk,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.Client
	ns := env.Namespace(t, "keys", labelled)

	getSecret := func(pod *corev1.Pod) (*corev1.Secret, error) {
		s := &corev1.Secret{}
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: sidecar.SecretName(pod.Name)}, s)
		return s, err
	}

	t.Run("join, then delete", func(t *testing.T) {
		pod := newPod(ns, "adapter-join")
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var secret *corev1.Secret
		testenv.Eventually(t, 30*time.Second, "pod secret", func() (err error) {
			secret, err = getSecret(pod)
			return err
		})
		t.Logf("secret %s created %v after the pod", secret.Name, time.Since(start).Round(time.Millisecond))
		if !metav1.IsControlledBy(secret, pod) {
			t.Fatalf("secret owners %+v, want the pod %s", secret.OwnerReferences, pod.UID)
		}
		key := controlplane.Secret(secret.Data[sidecar.SecretKeyAuthKey])
		if key.IsZero() || string(secret.Data[sidecar.SecretKeyControlURL]) != hs.URL {
			t.Fatalf("secret keys: auth key empty=%v, control URL %q (want %q)", key.IsZero(), secret.Data[sidecar.SecretKeyControlURL], hs.URL)
		}
		expires, err := time.Parse(time.RFC3339, secret.Annotations[controller.AnnotationExpires])
		if err != nil || time.Until(expires) < 9*time.Minute {
			t.Fatalf("key expiry annotation %q: %v", secret.Annotations[controller.AnnotationExpires], err)
		}

		host := pod.Annotations[sidecar.AnnotationHostname]
		_, st := hs.NewNode(t, headscaletest.NodeOptions{Hostname: host, AuthKey: key.Reveal(), Ephemeral: true})
		t.Logf("tsnet node %s joined with the pod's key as %s, tags %v", host, st.Self.ID, st.Self.Tags.AsSlice())
		if !slices.Contains(st.Self.Tags.AsSlice(), contract.TagAdapter) {
			t.Fatalf("node tags %v, want %s", st.Self.Tags.AsSlice(), contract.TagAdapter)
		}
		testenv.Eventually(t, 30*time.Second, "node id recorded in the secret", func() error {
			s, err := getSecret(pod)
			if err != nil {
				return err
			}
			if got := s.Annotations[controller.AnnotationNodeID]; got != string(st.Self.ID) {
				return fmt.Errorf("node id annotation %q, want %q", got, st.Self.ID)
			}
			return nil
		})
		// Single use: the key cannot register a second node.
		if err := joinOnce(t, hs.URL, "adapter-join-again", key); err == nil {
			t.Fatal("a second node joined with the pod's single-use key")
		} else {
			t.Logf("second join with the same key refused: %v", err)
		}
		devs, err := cp.ListDevices(ctx, controlplane.ListOptions{Tag: contract.TagAdapter})
		if err != nil || len(devs) != 1 || !devs[0].Ephemeral {
			t.Fatalf("adapter devices %+v, %v; want one ephemeral", devs, err)
		}

		start = time.Now()
		if err := c.Delete(ctx, pod); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "pod gone", func() error {
			err := c.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("pod still there: %w", err)
		})
		podGone := time.Since(start)
		devs, err = cp.ListDevices(ctx, controlplane.ListOptions{})
		if err != nil || len(devs) != 0 {
			t.Fatalf("devices after the pod is gone: %+v, %v; want none", devs, err)
		}
		testenv.Eventually(t, 60*time.Second, "secret garbage-collected", func() error {
			_, err := getSecret(pod)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("secret still there: %w", err)
		})
		t.Logf("after delete: node gone and pod released in %v, secret collected in %v",
			podGone.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	})

	t.Run("unused key is re-minted before it expires", func(t *testing.T) {
		pod := newPod(ns, "adapter-idle")
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		var first *corev1.Secret
		testenv.Eventually(t, 30*time.Second, "pod secret", func() (err error) {
			first, err = getSecret(pod)
			return err
		})
		// Move the controller's clock to 1 minute before the key expires,
		// inside the re-mint window (the last quarter of its life).
		expires, _ := time.Parse(time.RFC3339, first.Annotations[controller.AnnotationExpires])
		skew.Store(int64(time.Until(expires) - time.Minute))
		defer skew.Store(0)
		start := time.Now()
		var second *corev1.Secret
		testenv.Eventually(t, 30*time.Second, "re-minted key", func() (err error) {
			second, err = getSecret(pod)
			if err == nil && second.Annotations[controller.AnnotationKeyID] == first.Annotations[controller.AnnotationKeyID] {
				return fmt.Errorf("key %s not re-minted yet", first.Annotations[controller.AnnotationKeyID])
			}
			return err
		})
		skew.Store(0)
		t.Logf("key %s re-minted as %s %v after the clock moved", first.Annotations[controller.AnnotationKeyID],
			second.Annotations[controller.AnnotationKeyID], time.Since(start).Round(time.Millisecond))
		if string(second.Data[sidecar.SecretKeyAuthKey]) == string(first.Data[sidecar.SecretKeyAuthKey]) {
			t.Fatal("the auth key itself did not change")
		}
		if second.UID != first.UID || !metav1.IsControlledBy(second, pod) {
			t.Fatal("the secret was replaced instead of updated, or lost its owner")
		}
		// The new key works.
		_, st := hs.NewNode(t, headscaletest.NodeOptions{
			Hostname: pod.Annotations[sidecar.AnnotationHostname], AuthKey: string(second.Data[sidecar.SecretKeyAuthKey]), Ephemeral: true,
		})
		if !slices.Contains(st.Self.Tags.AsSlice(), contract.TagAdapter) {
			t.Fatalf("node tags %v", st.Self.Tags.AsSlice())
		}
		if err := c.Delete(ctx, pod); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "node deleted", func() error {
			devs, err := cp.ListDevices(ctx, controlplane.ListOptions{})
			if err == nil && len(devs) != 0 {
				return fmt.Errorf("%d devices left", len(devs))
			}
			return err
		})
	})
	t.Run("pod released when the control plane stays down", func(t *testing.T) {
		pod := newPod(ns, "adapter-orphan")
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "pod secret", func() error {
			_, err := getSecret(pod)
			return err
		})
		hs.Stop() // last subtest: nothing needs Headscale after this
		start := time.Now()
		if err := c.Delete(ctx, pod); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 60*time.Second, "pod released", func() error {
			err := c.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("pod still there: %w", err)
		})
		t.Logf("pod released %v after deletion with the control plane down (give-up after 3s)", time.Since(start).Round(time.Millisecond))
	})
}

// joinOnce tries to bring up a tsnet node with key and returns why it
// could not.
func joinOnce(t *testing.T, controlURL, host string, key controlplane.Secret) error {
	headscaletest.OfflineClean()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ts := &tsnet.Server{
		Dir: t.TempDir(), Hostname: host, ControlURL: controlURL, AuthKey: key.Reveal(), Ephemeral: true,
		Logf: logger.Discard, UserLogf: logger.Discard,
	}
	defer ts.Close()
	_, err := ts.Up(ctx)
	return err
}
