// Package release tells a stopping daemon pod whether its DaemonSet is going away, asking the API server with the pod's service account.
package release

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ServiceAccountDir is where kubelet mounts a pod's service account token,
// the cluster's CA and the pod's namespace.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Verdict is what a stopping daemon pod should do with the node's chain.
type Verdict int

const (
	// Keep: the DaemonSet is there and not being deleted, so this is a
	// restart or a rolling update and a daemon comes back.
	Keep Verdict = iota
	// Remove: the DaemonSet is gone or being deleted; no daemon comes back.
	Remove
)

func (v Verdict) String() string {
	if v == Remove {
		return "remove"
	}
	return "keep"
}

// Checker asks the API server about one DaemonSet. Its methods are safe for
// concurrent use.
type Checker struct {
	Server    string // https://host:port of the API server
	TokenFile string // re-read on every request: kubelet rotates it
	Namespace string
	Client    *http.Client // trusts the cluster's CA
	// After waits between attempts; time.After when nil.
	After func(time.Duration) <-chan time.Time
}

// InCluster is a Checker for the pod it runs in: the API server from the
// environment kubelet gives every container (KUBERNETES_SERVICE_HOST and
// _PORT), the token, CA and namespace from saDir (ServiceAccountDir outside
// tests). namespace, when not empty, overrides the pod's own.
func InCluster(getenv func(string) string, saDir, namespace string) (*Checker, error) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not in a pod")
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", filepath.Join(saDir, "ca.crt"))
	}
	if namespace == "" {
		b, err := os.ReadFile(filepath.Join(saDir, "namespace"))
		if err != nil {
			return nil, fmt.Errorf("reading the pod's namespace: %w", err)
		}
		namespace = strings.TrimSpace(string(b))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.Proxy = nil // the API server's service address is never behind a proxy
	return &Checker{
		Server:    "https://" + net.JoinHostPort(host, port),
		TokenFile: filepath.Join(saDir, "token"),
		Namespace: namespace,
		Client:    &http.Client{Transport: tr, Timeout: 5 * time.Second},
	}, nil
}

// DaemonSet makes one request for the DaemonSet name and says what to do,
// and why. An error means the answer is unknown (the API server is
// unreachable or answered something unexpected).
//
// Refused credentials count as Remove: helm uninstall deletes the
// ServiceAccount and the RoleBinding in the same breath as the DaemonSet,
// usually before kubelet runs the hook of the pods the DaemonSet's deletion
// stops, and the API server refuses a token whose service account is gone
// (401) or lacks the Role (403). A restart or an update keeps both, so the
// token works and the DaemonSet is there.
func (c *Checker) DaemonSet(ctx context.Context, name string) (Verdict, string, error) {
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return Keep, "", fmt.Errorf("reading the service account token: %w", err)
	}
	u := fmt.Sprintf("%s/apis/apps/v1/namespaces/%s/daemonsets/%s", c.Server, url.PathEscape(c.Namespace), url.PathEscape(name))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Keep, "", err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Accept", "application/json")
	resp, err := c.Client.Do(req)
	if err != nil {
		return Keep, "", fmt.Errorf("asking the API server: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Keep, "", fmt.Errorf("reading the API server's answer: %w", err)
	}
	ds := fmt.Sprintf("daemonset %s/%s", c.Namespace, name)
	switch resp.StatusCode {
	case http.StatusOK:
		var obj struct {
			Metadata struct {
				DeletionTimestamp *time.Time `json:"deletionTimestamp"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(body, &obj); err != nil {
			return Keep, "", fmt.Errorf("decoding %s: %w", ds, err)
		}
		if t := obj.Metadata.DeletionTimestamp; t != nil {
			return Remove, fmt.Sprintf("%s is being deleted (since %s)", ds, t.UTC().Format(time.RFC3339)), nil
		}
		return Keep, ds + " is there: a restart or an update", nil
	case http.StatusNotFound:
		return Remove, ds + " is gone", nil
	case http.StatusUnauthorized:
		return Remove, "the API server refuses this pod's token: its service account is gone with the release", nil
	case http.StatusForbidden:
		return Remove, "this pod may no longer read " + ds + ": its Role or RoleBinding is gone with the release", nil
	}
	return Keep, "", fmt.Errorf("asking for %s: %s: %s", ds, resp.Status, firstLine(body))
}

// Decide asks until it gets an answer or ctx ends, every second; with no
// answer it returns Keep and the last error, since a chain kept by mistake
// only needs a manual `install-cni --uninstall`, while a chain removed by
// mistake makes pods start without a tailnet address unnoticed.
func (c *Checker) Decide(ctx context.Context, name string) (Verdict, string, error) {
	after := c.After
	if after == nil {
		after = time.After
	}
	for {
		v, why, err := c.DaemonSet(ctx, name)
		if err == nil {
			return v, why, nil
		}
		select {
		case <-ctx.Done():
			return Keep, "", fmt.Errorf("no answer before the deadline: %w", err)
		case <-after(time.Second):
		}
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
