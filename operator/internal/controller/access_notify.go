package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"tailscale.com/types/logger"

	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
)

// Notifier posts a target's events to its Slack-compatible webhook. Send
// never blocks: each notification runs in its own goroutine with a timeout
// and bounded retries, so a slow or failing webhook cannot delay a grant or
// a revoke. It is safe for concurrent use.
type Notifier struct {
	Logf      logger.Logf
	HTTP      *http.Client  // http.DefaultClient when nil
	Secrets   client.Reader // reads webhookURLSecretRef; uncached
	Namespace string        // of webhookURLSecretRef's Secrets
	Timeout   time.Duration // per attempt; 5s when zero
	Retries   int           // after the first attempt; 3 when zero
	// Done, when set, is called after each notification ends (tests).
	Done func(ok bool)
}

// Send posts text for target in the background. The URL is read here,
// before returning, so that the goroutine holds no client object.
func (n *Notifier) Send(ctx context.Context, t *accessv1.AccessTarget, text string) {
	if n == nil || t == nil || t.Spec.Notify == nil {
		return
	}
	url, err := n.url(ctx, t.Spec.Notify)
	if err != nil {
		n.Logf("access: notify %s: %v", t.Name, err)
		accessNotifyFailures.Inc()
		return
	}
	go n.post(t.Name, url, text)
}

func (n *Notifier) url(ctx context.Context, nt *accessv1.Notify) (string, error) {
	if nt.WebhookURL != "" {
		return nt.WebhookURL, nil
	}
	ref := nt.WebhookURLSecretRef
	if ref == nil || n.Secrets == nil {
		return "", fmt.Errorf("no webhook URL")
	}
	var s corev1.Secret
	if err := n.Secrets.Get(ctx, types.NamespacedName{Namespace: n.Namespace, Name: ref.Name}, &s); err != nil {
		return "", fmt.Errorf("reading secret %s/%s: %w", n.Namespace, ref.Name, err)
	}
	u := string(s.Data[ref.Key])
	if u == "" {
		return "", fmt.Errorf("secret %s/%s has no key %q", n.Namespace, ref.Name, ref.Key)
	}
	return u, nil
}

func (n *Notifier) post(target, url, text string) {
	hc := n.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	timeout, retries := n.Timeout, n.Retries
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	if retries == 0 {
		retries = 3
	}
	body, _ := json.Marshal(map[string]string{"text": text})
	var lastErr error
	for i := 0; i <= retries; i++ {
		if i > 0 {
			time.Sleep(time.Duration(i) * time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			cancel()
			lastErr = err
			break
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := hc.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode/100 == 2 {
				cancel()
				if n.Done != nil {
					n.Done(true)
				}
				return
			}
			err = fmt.Errorf("status %s", res.Status)
		}
		cancel()
		lastErr = err
	}
	// The URL may hold a token: never log it.
	n.Logf("access: notify %s: giving up after %d attempts: %v", target, retries+1, redact(lastErr, url))
	accessNotifyFailures.Inc()
	if n.Done != nil {
		n.Done(false)
	}
}

// redact removes url from err's text.
func redact(err error, url string) string {
	if err == nil {
		return ""
	}
	return string(bytes.ReplaceAll([]byte(err.Error()), []byte(url), []byte("<webhook URL>")))
}
