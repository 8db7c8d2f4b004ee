package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"tailscale.com/ipn"
)

// Secrets is all the proxy needs of the API server: the Secrets of its own
// namespace, by name. Tests may implement it without an API server.
type Secrets interface {
	Get(ctx context.Context, name string) (*corev1.Secret, error)
	// Watch streams the changes of the one Secret name after resourceVersion.
	Watch(ctx context.Context, name, resourceVersion string) (watch.Interface, error)
	Update(ctx context.Context, s *corev1.Secret) (*corev1.Secret, error)
	Create(ctx context.Context, s *corev1.Secret) (*corev1.Secret, error)
}

// KubeSecrets is Secrets over client-go.
func KubeSecrets(c typedcorev1.SecretInterface) Secrets { return kubeSecrets{c} }

type kubeSecrets struct{ c typedcorev1.SecretInterface }

func (k kubeSecrets) Get(ctx context.Context, name string) (*corev1.Secret, error) {
	return k.c.Get(ctx, name, metav1.GetOptions{})
}

func (k kubeSecrets) Watch(ctx context.Context, name, rv string) (watch.Interface, error) {
	return k.c.Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
		ResourceVersion: rv,
	})
}

func (k kubeSecrets) Update(ctx context.Context, s *corev1.Secret) (*corev1.Secret, error) {
	return k.c.Update(ctx, s, metav1.UpdateOptions{})
}

func (k kubeSecrets) Create(ctx context.Context, s *corev1.Secret) (*corev1.Secret, error) {
	return k.c.Create(ctx, s, metav1.CreateOptions{})
}

// apiTimeout bounds one API call.
const apiTimeout = 30 * time.Second

// modifySecret applies edit to the current Secret name and writes it when
// edit reports a change, retrying on conflicts. It creates the Secret when
// it does not exist.
func modifySecret(ctx context.Context, c Secrets, name string, edit func(s *corev1.Secret) bool) error {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(ctx, apiTimeout)
		s, err := c.Get(ctx, name)
		create := false
		switch {
		case apierrors.IsNotFound(err):
			s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}}
			create = true
		case err != nil:
			cancel()
			return fmt.Errorf("reading Secret %s: %w", name, err)
		}
		if !edit(s) {
			cancel()
			return nil
		}
		if create {
			_, err = c.Create(ctx, s)
		} else {
			_, err = c.Update(ctx, s)
		}
		cancel()
		if err == nil {
			return nil
		}
		if (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) && attempt < 10 {
			continue
		}
		return fmt.Errorf("writing Secret %s: %w", name, err)
	}
}

// secretStore is an ipn.StateStore over one Secret: the node's keys and
// profile live in the Secret's data, so a restarted or rescheduled proxy
// comes back as the same node with the same address. It caches what it
// read at start and what it wrote; the proxy is the Secret's only writer
// of data. Safe for concurrent use.
type secretStore struct {
	c    Secrets
	name string

	mu    sync.Mutex
	cache map[string][]byte
}

func newSecretStore(ctx context.Context, c Secrets, name string) (*secretStore, error) {
	st := &secretStore{c: c, name: name, cache: map[string][]byte{}}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	s, err := c.Get(ctx, name)
	switch {
	case apierrors.IsNotFound(err):
		// Created on the first write.
	case err != nil:
		return nil, fmt.Errorf("reading the state Secret %s: %w", name, err)
	default:
		maps.Copy(st.cache, s.Data)
	}
	return st, nil
}

// sanitizeKey makes a StateKey a valid Secret data key, as kubestore does.
func sanitizeKey(k ipn.StateKey) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, string(k))
}

func (st *secretStore) ReadState(id ipn.StateKey) ([]byte, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	b, ok := st.cache[sanitizeKey(id)]
	if !ok {
		return nil, ipn.ErrStateNotExist
	}
	return bytes.Clone(b), nil
}

func (st *secretStore) WriteState(id ipn.StateKey, bs []byte) error {
	k := sanitizeKey(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	if old, ok := st.cache[k]; ok == (bs != nil) && bytes.Equal(old, bs) {
		return nil
	}
	err := modifySecret(context.Background(), st.c, st.name, func(s *corev1.Secret) bool {
		if bs == nil {
			if _, ok := s.Data[k]; !ok {
				return false
			}
			delete(s.Data, k)
			return true
		}
		if old, ok := s.Data[k]; ok && bytes.Equal(old, bs) {
			return false
		}
		if s.Data == nil {
			s.Data = map[string][]byte{}
		}
		s.Data[k] = bs
		return true
	})
	if err != nil {
		return fmt.Errorf("state %q: %w", k, err)
	}
	if bs == nil {
		delete(st.cache, k)
	} else {
		st.cache[k] = bytes.Clone(bs)
	}
	return nil
}

// errSecretGone is what the watch reports when the config Secret is deleted.
var errSecretGone = errors.New("the config Secret was deleted")
