package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// PodSocketArg, as the first argument, makes the binary relay its stdin and
// stdout to one pod's LocalAPI socket instead of running the daemon:
//
//	tailscale-cni-daemon pod-socket <runDir>/pods/<namespace>_<pod>/tailscaled.sock
//
// `tsymbiote pod` runs it through the API server's pods/exec in the daemon's
// container, which is where the sockets are, so that it can ask a pod's node
// on another machine what `tailscale status` would. It is dispatched from
// init, before the daemon's command parses anything, so that it stays out
// of the daemon's flags and help; it opens only sockets of the per-pod
// layout. Whoever may exec into the daemon's container is already root on
// the node, so the relay gives them nothing new.
const PodSocketArg = "pod-socket"

func init() {
	if len(os.Args) >= 2 && os.Args[1] == PodSocketArg {
		if err := relayPodSocket(os.Args[2:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "tailscale-cni-daemon %s: %v\n", PodSocketArg, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// checkPodSocket accepts only <dir>/pods/<namespace>_<pod>/tailscaled.sock.
func checkPodSocket(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("socket %q: want an absolute, clean path", p)
	}
	pod := filepath.Base(filepath.Dir(p))
	ns, name, ok := strings.Cut(pod, "_")
	if filepath.Base(p) != "tailscaled.sock" || filepath.Base(filepath.Dir(filepath.Dir(p))) != "pods" ||
		!ok || ns == "" || name == "" || strings.Contains(name, "_") {
		return fmt.Errorf("socket %q: want <runDir>/pods/<namespace>_<pod>/tailscaled.sock", p)
	}
	return nil
}

// relayPodSocket copies in to the socket named by args and the socket to
// out, until the socket closes. The end of in is passed on as a half-close,
// so that a last request still gets its answer.
func relayPodSocket(args []string, in io.Reader, out io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("want one argument, the pod's socket; got %d", len(args))
	}
	if err := checkPodSocket(args[0]); err != nil {
		return err
	}
	if _, err := os.Stat(args[0]); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no socket at %s: the pod is not attached to tailscale-cni on this node", args[0])
	}
	c, err := net.Dial("unix", args[0])
	if err != nil {
		return fmt.Errorf("connecting to the pod's node: %w", err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	go func() {
		_, _ = io.Copy(uc, in)
		_ = uc.CloseWrite()
	}()
	if _, err := io.Copy(out, uc); err != nil {
		return fmt.Errorf("relaying the pod's node's answer: %w", err)
	}
	return nil
}
