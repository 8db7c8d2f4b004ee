package webui

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

// PingPeers makes countingClient an adapter from before PingPeers, so that
// TestFanoutBounds checks the bounds on the unary Ping calls a fan-out
// falls back to.
func (c *countingClient) PingPeers(context.Context, *adapterv1.PingPeersRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[adapterv1.PingPeersResponse], error) {
	return nil, status.Error(codes.Unimplemented, "method PingPeers not implemented")
}
