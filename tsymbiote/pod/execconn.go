package pod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// DaemonBinary is the daemon's binary in the tailscale-cni image, and
// PodSocketArg its relay mode (cni/cmd/tailscale-cni-daemon/podsocket.go).
const (
	DaemonBinary = "/opt/tailscale-cni/tailscale-cni-daemon"
	PodSocketArg = "pod-socket"
)

// execDialer reaches a pod's LocalAPI socket on another machine: each
// connection is one exec of the daemon's relay in its container, through
// the API server, with the exec's stdin and stdout as the connection.
type execDialer struct {
	cfg    *rest.Config
	cs     kubernetes.Interface
	daemon *corev1.Pod
	socket string
}

func (d *execDialer) executor() (remotecommand.Executor, error) {
	req := d.cs.CoreV1().RESTClient().Post().Resource("pods").
		Namespace(d.daemon.Namespace).Name(d.daemon.Name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: DaemonContainer,
			Command:   []string{DaemonBinary, PodSocketArg, d.socket},
			Stdin:     true,
			Stdout:    true,
			Stderr:    true,
		}, scheme.ParameterCodec)
	// As kubectl does: WebSockets, falling back to SPDY for API servers
	// that do not upgrade them.
	ws, err := remotecommand.NewWebSocketExecutor(d.cfg, "GET", req.URL().String())
	if err != nil {
		return nil, fmt.Errorf("exec into %s/%s: %w", d.daemon.Namespace, d.daemon.Name, err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(d.cfg, "POST", req.URL())
	if err != nil {
		return nil, fmt.Errorf("exec into %s/%s: %w", d.daemon.Namespace, d.daemon.Name, err)
	}
	return remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

// DialContext starts the relay and returns the connection to it. The exec
// lives as long as the connection, not ctx.
func (d *execDialer) DialContext(_ context.Context, _, _ string) (net.Conn, error) {
	ex, err := d.executor()
	if err != nil {
		return nil, err
	}
	mine, theirs := net.Pipe()
	sctx, cancel := context.WithCancel(context.Background())
	c := &execConn{Conn: mine, cancel: cancel, done: make(chan struct{}), where: d.daemon.Namespace + "/" + d.daemon.Name}
	go func() {
		defer close(c.done)
		err := ex.StreamWithContext(sctx, remotecommand.StreamOptions{Stdin: theirs, Stdout: theirs, Stderr: &c.stderr})
		theirs.Close()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
	}()
	return c, nil
}

// execConn is one relay's connection. When the exec fails (no rights, no
// relay in the daemon, no socket), reads end with why, not a bare EOF.
type execConn struct {
	net.Conn
	cancel context.CancelFunc
	done   chan struct{}
	where  string
	stderr lockedBuffer

	mu  sync.Mutex
	err error
}

func (c *execConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
		<-c.done
		if why := c.why(); why != nil {
			return n, why
		}
	}
	return n, err
}

// why is the exec's failure, with what the relay wrote to stderr.
func (c *execConn) why() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	msg := strings.TrimSpace(c.stderr.String())
	switch {
	case err == nil && msg == "":
		return nil
	case msg == "":
		return fmt.Errorf("exec in %s: %w", c.where, err)
	case err == nil:
		return fmt.Errorf("exec in %s: %s", c.where, msg)
	}
	return fmt.Errorf("exec in %s: %s (%w)", c.where, msg, err)
}

func (c *execConn) Close() error {
	err := c.Conn.Close()
	c.cancel()
	return err
}

// lockedBuffer is the exec's stderr: written by the stream's goroutine,
// read by the connection's reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
