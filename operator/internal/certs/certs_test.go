package certs_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"tsymbiote.dhouti.dev/operator/internal/certs"
	"tsymbiote.dhouti.dev/operator/internal/testenv"
)

// TestCerts runs the certificate manager against the real API server:
// replicas starting together settle on one CA; the caBundle is set and
// repaired after being wiped; a certificate near its end is renewed.
func TestCerts(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	c := env.Client
	const ns = "tsymbiote-system"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	wh := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "tsymbiote-operator"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "adapter.tsymbiote.dhouti.dev",
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
				Namespace: ns, Name: "tsymbiote-operator-webhook", Path: ptr.To("/mutate-v1-pod"),
			}},
		}},
	}
	if err := c.Create(ctx, wh); err != nil {
		t.Fatal(err)
	}
	newManager := func(dir string, validity time.Duration) *certs.Manager {
		m, err := certs.New(t.Logf, c, certs.Options{
			Namespace: ns, SecretName: "webhook-cert", ServiceName: "tsymbiote-operator-webhook",
			WebhookConfigName: wh.Name, CertDir: dir, Validity: validity,
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// Three replicas at once.
	var wg sync.WaitGroup
	ms := make([]*certs.Manager, 3)
	errs := make([]error, 3)
	for i := range ms {
		ms[i] = newManager(filepath.Join(t.TempDir(), "certs"), 0)
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = ms[i].EnsureCert(ctx) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		if !bytes.Equal(ms[i].CABundle(), ms[0].CABundle()) {
			t.Fatalf("replica %d settled on a different CA", i)
		}
	}
	if err := ms[1].EnsureCABundle(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(wh), wh); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wh.Webhooks[0].ClientConfig.CABundle, ms[0].CABundle()) {
		t.Fatal("caBundle not set")
	}

	// A Helm upgrade that wipes the caBundle is repaired by the next check.
	patch := client.MergeFrom(wh.DeepCopy())
	wh.Webhooks[0].ClientConfig.CABundle = nil
	if err := c.Patch(ctx, wh, patch); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ms[2].Run(runCtx, 100*time.Millisecond) }()
	testenv.Eventually(t, 10*time.Second, "caBundle repaired", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(wh), wh); err != nil {
			return err
		}
		if !bytes.Equal(wh.Webhooks[0].ClientConfig.CABundle, ms[0].CABundle()) {
			return testenv.NotYet("caBundle empty")
		}
		return nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A manager that wants certificates valid for much longer than the
	// stored one has left renews it.
	renew := newManager(filepath.Join(t.TempDir(), "certs"), 10*365*24*time.Hour)
	if err := renew.EnsureCert(ctx); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(renew.CABundle(), ms[0].CABundle()) {
		t.Fatal("certificate near the end of its validity was not renewed")
	}
	s := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "webhook-cert"}, s); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(s.Data[certs.KeyCert])
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("renewed certificate valid until %s for %v", cert.NotAfter.Format(time.DateOnly), cert.DNSNames)
}
