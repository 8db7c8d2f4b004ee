package adapter

import (
	"context"
	"fmt"
	"net"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/types/logger"
)

// whoIser answers who owns a tailnet address; the adapter's own tsnet node
// is one.
type whoIser interface {
	WhoIs(ctx context.Context, remoteAddr string) (*apitype.WhoIsResponse, error)
}

// authorizer admits callers whose node carries tag. A nil whois admits
// everyone: dev mode, where the listener is bound to localhost.
type authorizer struct {
	logf  logger.Logf
	whois whoIser
	tag   string
}

// check returns nil for an allowed caller and a PermissionDenied status
// otherwise, logging who was refused.
func (a *authorizer) check(ctx context.Context, what string) error {
	if a.whois == nil {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		a.logf("denied %s: no peer address", what)
		return status.Error(codes.PermissionDenied, "caller address unknown")
	}
	return a.checkAddr(ctx, what, p.Addr)
}

func (a *authorizer) checkAddr(ctx context.Context, what string, addr net.Addr) error {
	w, err := a.whois.WhoIs(ctx, addr.String())
	if err != nil || w == nil || w.Node == nil {
		a.logf("denied %s to %s: not a known tailnet node (%v)", what, addr, err)
		return status.Errorf(codes.PermissionDenied, "caller %s is not a known tailnet node", addr)
	}
	if slices.Contains(w.Node.Tags, a.tag) {
		return nil
	}
	who := w.Node.ComputedName
	if who == "" {
		who = w.Node.Name
	}
	user := ""
	if w.UserProfile != nil {
		user = w.UserProfile.LoginName
	}
	a.logf("denied %s to %s (node %s %s, user %q, tags %v): lacks %s", what, addr, w.Node.StableID, who, user, w.Node.Tags, a.tag)
	return status.Error(codes.PermissionDenied, fmt.Sprintf("caller %s (node %s, tags %v) lacks %s", addr, w.Node.StableID, w.Node.Tags, a.tag))
}

func (a *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
