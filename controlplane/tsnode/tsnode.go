// Package tsnode is how a TSymbiote daemon that is a tsnet node of its own
// (the adapter, the WebUI) names itself, joins the tailnet and leaves it
// without a trace. The daemons may not import each other, so what they do
// the same way lives here, beside the control-plane client they both use.
package tsnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"tailscale.com/envknob"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
)

// CheckHostname reports whether h can be a tailnet hostname: one DNS label
// of letters, digits and '-'.
func CheckHostname(h string) error {
	if h == "" || len(h) > 63 {
		return fmt.Errorf("%q: want 1 to 63 characters", h)
	}
	for _, r := range h {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' {
			return fmt.Errorf("%q: only letters, digits and '-' are allowed", h)
		}
	}
	return nil
}

// CheckHostnameFlags checks the --hostname and --hostname-prefix pair the
// daemons share: --hostname when set, else the prefix, must be a hostname.
func CheckHostnameFlags(hostname, prefix string) error {
	if hostname != "" {
		if err := CheckHostname(hostname); err != nil {
			return fmt.Errorf("--hostname: %w", err)
		}
		return nil
	}
	if err := CheckHostname(prefix); err != nil {
		return fmt.Errorf("--hostname-prefix: %w", err)
	}
	return nil
}

// Hostname is hostname (--hostname) when set, else prefix joined to this
// machine's short name (a pod's name, in Kubernetes), made a DNS label of
// at most 63 characters.
func Hostname(hostname, prefix string) string {
	if hostname != "" {
		return hostname
	}
	h, _ := os.Hostname()
	return hostnameFor(prefix, h)
}

func hostnameFor(prefix, machine string) string {
	machine, _, _ = strings.Cut(machine, ".")
	var b strings.Builder
	for _, r := range strings.ToLower(machine) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	name := prefix
	if s := strings.Trim(b.String(), "-"); s != "" {
		name += "-" + s
	}
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	return name
}

// Options says how to join.
type Options struct {
	Dir        string              // state directory
	Hostname   string              // the node's name on the tailnet
	ControlURL string              // empty is Tailscale's
	AuthKey    controlplane.Secret // empty waits for an interactive login
	// Ephemeral nodes are removed by the control plane once offline; a
	// daemon that logs out on exit joins as one.
	Ephemeral bool
	// BackendLogf gets tsnet's own (verbose) logs; discarded when nil.
	BackendLogf logger.Logf
	// Tag is what the node should be tagged with, named in the message
	// that asks for an interactive login.
	Tag string
}

// NoLogUpload turns off tsnet's upload of its logs to Tailscale's log
// server for the whole process. Outside tests tsnet uploads them unless
// told not to, and a TSymbiote daemon may serve a Headscale tailnet that
// must not talk to Tailscale at all; its logs go to its own stderr. Safe to
// call more than once and from any goroutine.
func NoLogUpload() { envknob.SetNoLogsNoSupport() }

// Join starts a tsnet node and waits until it is up. It turns off log
// upload first (NoLogUpload).
func Join(ctx context.Context, logf logger.Logf, o Options) (*tsnet.Server, error) {
	NoLogUpload()
	bl := o.BackendLogf
	if bl == nil {
		bl = logger.Discard
	}
	srv := &tsnet.Server{
		Dir:        o.Dir,
		Hostname:   o.Hostname,
		ControlURL: o.ControlURL,
		AuthKey:    o.AuthKey.Reveal(),
		Ephemeral:  o.Ephemeral,
		Logf:       bl,
		// The interactive login URL, when there is no key, goes here.
		UserLogf: logger.WithPrefix(logf, "tsnet: "),
	}
	if o.AuthKey.IsZero() {
		logf("no auth key (TS_AUTHKEY): waiting for an interactive login (the URL is logged below); tag the node %s", o.Tag)
	}
	if _, err := srv.Up(ctx); err != nil {
		srv.Close()
		return nil, fmt.Errorf("joining the tailnet: %w", err)
	}
	return srv, nil
}

// Leave logs srv's node out, so that it leaves the tailnet rather than
// lingering offline, and deletes it through cp when cp is not nil (Headscale
// needs that even for ephemeral nodes to vanish at once). It does not close
// srv.
func Leave(logf logger.Logf, srv *tsnet.Server, cp controlplane.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	lc, err := srv.LocalClient()
	if err != nil {
		return
	}
	var id string
	if st, err := lc.StatusWithoutPeers(ctx); err == nil && st.Self != nil {
		id = string(st.Self.ID)
	}
	if err := lc.Logout(ctx); err != nil {
		logf("logout: %v", err)
	} else {
		logf("logged out")
	}
	if cp == nil || id == "" {
		return
	}
	switch err := cp.DeleteDevice(ctx, id); {
	case err == nil:
		logf("deleted node %s from the control plane", id)
	case errors.Is(err, controlplane.ErrNotFound):
		// Ephemeral nodes can be gone once logged out.
	default:
		logf("deleting node %s: %v", id, err)
	}
}

// Serve runs each of serve in a goroutine of its own, calls ready (if not
// nil) once they are all started, and returns when ctx ends (nil) or when
// the first of them returns (its error, which is never nil for an
// http.Server or grpc.Server that was not shut down). The caller shuts its
// servers down afterwards; the others' results are dropped into a buffered
// channel, so no goroutine is left blocked.
func Serve(ctx context.Context, ready func(), serve ...func() error) error {
	errc := make(chan error, len(serve))
	for _, s := range serve {
		go func() { errc <- s() }()
	}
	if ready != nil {
		ready()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	}
}
