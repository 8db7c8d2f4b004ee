// Package certs gives the webhook server a serving certificate without
// cert-manager: a self-signed CA and a serving certificate kept in a Secret
// (so that every replica serves the same one), written to the webhook
// server's certificate directory, and the CA kept in the
// MutatingWebhookConfiguration's caBundle.
package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"tailscale.com/types/logger"

	"tsymbiote.dhouti.dev/operator/internal/controller"
	"tsymbiote.dhouti.dev/proto/contract"
)

// Secret keys.
const (
	KeyCA   = "ca.crt"
	KeyCert = "tls.crt"
	KeyKey  = "tls.key"
)

// Options configure Manager.
type Options struct {
	Namespace         string // of the operator, its Service and the Secret
	SecretName        string // Secret holding the CA and serving pair
	ServiceName       string // webhook Service; names the certificate's DNS SANs
	WebhookConfigName string // MutatingWebhookConfiguration whose caBundle to keep
	CertDir           string // where the webhook server reads tls.crt and tls.key
	// Validity of new certificates; 1 year when zero. They are renewed
	// when a third of it is left.
	Validity time.Duration
}

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;update;patch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;update;patch

// Manager keeps the serving certificate and the caBundle in place.
type Manager struct {
	logf logger.Logf
	c    client.Client
	opts Options
	ca   []byte
}

// New returns a Manager that uses c, which must not depend on a cache that
// has not started yet.
func New(logf logger.Logf, c client.Client, opts Options) (*Manager, error) {
	switch {
	case opts.Namespace == "":
		return nil, errors.New("certs: namespace is empty (set --namespace or POD_NAMESPACE)")
	case opts.SecretName == "", opts.ServiceName == "", opts.WebhookConfigName == "", opts.CertDir == "":
		return nil, errors.New("certs: secret, service, webhook configuration names and the certificate directory are required")
	}
	if opts.Validity == 0 {
		opts.Validity = 365 * 24 * time.Hour
	}
	return &Manager{logf: logf, c: c, opts: opts}, nil
}

// EnsureCert makes sure the Secret holds a valid pair for the Service and
// writes it to the certificate directory. Replicas racing to create the
// Secret converge on the first one written.
func (m *Manager) EnsureCert(ctx context.Context) error {
	key := types.NamespacedName{Namespace: m.opts.Namespace, Name: m.opts.SecretName}
	for range 3 {
		s := &corev1.Secret{}
		err := m.c.Get(ctx, key, s)
		switch {
		case apierrors.IsNotFound(err):
			s = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
					Labels: map[string]string{contract.LabelManagedBy: controller.ManagedByValue}},
				Type: corev1.SecretTypeTLS,
			}
			if s.Data, err = m.generate(); err != nil {
				return err
			}
			if err := m.c.Create(ctx, s); err != nil {
				if apierrors.IsAlreadyExists(err) {
					continue
				}
				return fmt.Errorf("certs: creating secret %s: %w", key, err)
			}
			m.logf("certs: created serving certificate in secret %s", key)
		case err != nil:
			return fmt.Errorf("certs: reading secret %s: %w", key, err)
		case !m.usable(s.Data):
			if s.Data, err = m.generate(); err != nil {
				return err
			}
			if err := m.c.Update(ctx, s); err != nil {
				if apierrors.IsConflict(err) {
					continue
				}
				return fmt.Errorf("certs: renewing secret %s: %w", key, err)
			}
			m.logf("certs: renewed serving certificate in secret %s", key)
		}
		m.ca = s.Data[KeyCA]
		return m.write(s.Data)
	}
	return fmt.Errorf("certs: secret %s kept changing under us", key)
}

// CABundle is the CA that EnsureCert settled on.
func (m *Manager) CABundle() []byte { return m.ca }

// dnsNames are the names the API server may use to reach the Service.
func (m *Manager) dnsNames() []string {
	svc, ns := m.opts.ServiceName, m.opts.Namespace
	return []string{svc, svc + "." + ns, svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local"}
}

// usable reports whether data holds a pair for the Service's names that is
// not within a third of its validity of expiring.
func (m *Manager) usable(data map[string][]byte) bool {
	if len(data[KeyCA]) == 0 || len(data[KeyKey]) == 0 {
		return false
	}
	block, _ := pem.Decode(data[KeyCert])
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	for _, n := range m.dnsNames() {
		if !slices.Contains(cert.DNSNames, n) {
			return false
		}
	}
	return time.Until(cert.NotAfter) > m.opts.Validity/3
}

// generate makes a new CA and a serving pair signed by it.
func (m *Manager) generate() (map[string][]byte, error) {
	now := time.Now().Add(-time.Hour) // tolerate clock skew
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "tsymbiote-operator-webhook-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(m.opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: signing CA: %w", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: m.dnsNames()[2]},
		DNSNames:     m.dnsNames(),
		NotBefore:    now,
		NotAfter:     now.Add(m.opts.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: signing serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		KeyCA:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		KeyCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyKey:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// write puts the pair where the webhook server (which watches the files)
// reads it, replacing each file atomically.
func (m *Manager) write(data map[string][]byte) error {
	if err := os.MkdirAll(m.opts.CertDir, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	for _, k := range []string{KeyCert, KeyKey} {
		p := filepath.Join(m.opts.CertDir, k)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data[k]) {
			continue
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, data[k], 0o600); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
	}
	return nil
}

// EnsureCABundle sets the caBundle of every webhook in the configuration
// to the CA, if it is not already. A Helm upgrade that rewrites the
// configuration without one is repaired by the next call.
func (m *Manager) EnsureCABundle(ctx context.Context) error {
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := m.c.Get(ctx, types.NamespacedName{Name: m.opts.WebhookConfigName}, cfg); err != nil {
		return fmt.Errorf("certs: reading mutatingwebhookconfiguration %s: %w", m.opts.WebhookConfigName, err)
	}
	patch := client.MergeFromWithOptions(cfg.DeepCopy(), client.MergeFromWithOptimisticLock{})
	changed := false
	for i := range cfg.Webhooks {
		if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, m.ca) {
			cfg.Webhooks[i].ClientConfig.CABundle = m.ca
			changed = true
		}
	}
	if changed {
		if err := m.c.Patch(ctx, cfg, patch); err != nil {
			return fmt.Errorf("certs: patching caBundle of %s: %w", m.opts.WebhookConfigName, err)
		}
		m.logf("certs: set caBundle of mutatingwebhookconfiguration %s", m.opts.WebhookConfigName)
	}
	return m.ensureValidatingCABundle(ctx)
}

// ensureValidatingCABundle does the same for the ValidatingWebhookConfiguration
// of the same name (the access request webhook), when the chart installed one.
func (m *Manager) ensureValidatingCABundle(ctx context.Context) error {
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := m.c.Get(ctx, types.NamespacedName{Name: m.opts.WebhookConfigName}, cfg); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("certs: reading validatingwebhookconfiguration %s: %w", m.opts.WebhookConfigName, err)
	}
	patch := client.MergeFromWithOptions(cfg.DeepCopy(), client.MergeFromWithOptimisticLock{})
	changed := false
	for i := range cfg.Webhooks {
		if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, m.ca) {
			cfg.Webhooks[i].ClientConfig.CABundle = m.ca
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := m.c.Patch(ctx, cfg, patch); err != nil {
		return fmt.Errorf("certs: patching caBundle of validatingwebhookconfiguration %s: %w", m.opts.WebhookConfigName, err)
	}
	m.logf("certs: set caBundle of validatingwebhookconfiguration %s", m.opts.WebhookConfigName)
	return nil
}

// Run keeps the certificate and caBundle in place until ctx ends. It is a
// manager.Runnable that runs on every replica.
func (m *Manager) Run(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := m.EnsureCert(ctx); err != nil {
			if ctx.Err() == nil {
				m.logf("%v", err)
			}
			continue
		}
		if err := m.EnsureCABundle(ctx); err != nil && ctx.Err() == nil {
			m.logf("%v", err)
		}
	}
}
