package podmeta

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

// ServiceAccountDir is where kubelet mounts a pod's service account token
// and the cluster's CA.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// ErrNoPod is returned when the API server has no such pod: a runtime
// sandbox that is not a Kubernetes pod, or one already deleted.
var ErrNoPod = errors.New("pod not found in the API server")

// Client reads pods' annotations from the API server with a service
// account's token. It is safe for concurrent use.
type Client struct {
	Server    string // https://host:port
	TokenFile string // re-read on every request: kubelet rotates it
	HTTP      *http.Client
}

// InCluster is a Client for the pod it runs in: the API server from the
// environment kubelet gives every container, token and CA from saDir.
func InCluster(getenv func(string) string, saDir string) (*Client, error) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not in a pod")
	}
	return New("https://"+net.JoinHostPort(host, port), filepath.Join(saDir, "token"), filepath.Join(saDir, "ca.crt"))
}

// New is a Client of server that trusts caFile and sends tokenFile's token.
func New(server, tokenFile, caFile string) (*Client, error) {
	if !strings.HasPrefix(server, "https://") {
		return nil, fmt.Errorf("API server %q: want https://host:port", server)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.Proxy = nil // the API server is never behind a proxy for a node daemon
	return &Client{Server: strings.TrimSuffix(server, "/"), TokenFile: tokenFile, HTTP: &http.Client{Transport: tr, Timeout: 10 * time.Second}}, nil
}

// Annotations returns the annotations of pod namespace/name.
func (c *Client) Annotations(ctx context.Context, namespace, name string) (map[string]string, error) {
	if namespace == "" || name == "" {
		return nil, fmt.Errorf("pod %q/%q: %w", namespace, name, ErrNoPod)
	}
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading the service account token: %w", err)
	}
	u := fmt.Sprintf("%s/api/v1/namespaces/%s/pods/%s", c.Server, url.PathEscape(namespace), url.PathEscape(name))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Accept", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("getting pod %s/%s: %w", namespace, name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("getting pod %s/%s: %w", namespace, name, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("pod %s/%s: %w", namespace, name, ErrNoPod)
	default:
		msg, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
		if len(msg) > 300 {
			msg = msg[:300]
		}
		return nil, fmt.Errorf("getting pod %s/%s: %s: %s", namespace, name, resp.Status, msg)
	}
	var obj struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, fmt.Errorf("decoding pod %s/%s: %w", namespace, name, err)
	}
	return obj.Metadata.Annotations, nil
}
