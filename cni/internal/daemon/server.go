package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"tsymbiote.dhouti.dev/cni/internal/cnierr"
	cniv1 "tsymbiote.dhouti.dev/proto/cni/v1"
)

// Server is the shim's gRPC service over a unix socket.
type Server struct {
	cniv1.UnimplementedCNIServiceServer
	m *Manager
}

// NewServer serves m.
func NewServer(m *Manager) *Server { return &Server{m: m} }

// Listen opens the daemon's socket, replacing a stale one a dead daemon
// left, and only root may connect.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket dir: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("another daemon is serving %s", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// GRPCServer returns a grpc.Server with the service registered.
func (s *Server) GRPCServer() *grpc.Server {
	g := grpc.NewServer()
	cniv1.RegisterCNIServiceServer(g, s)
	return g
}

func attachmentOf(a *cniv1.Attachment, network string) Attachment {
	if a == nil {
		return Attachment{}
	}
	return Attachment{
		ContainerID: a.GetContainerId(), NetNS: a.GetNetns(), IfName: a.GetIfname(), Network: network,
		Namespace: a.GetPodNamespace(), Pod: a.GetPodName(), PodUID: a.GetPodUid(),
	}
}

func (s *Server) Add(ctx context.Context, req *cniv1.AddRequest) (*cniv1.AddResponse, error) {
	res, err := s.m.Add(ctx, attachmentOf(req.GetAttachment(), req.GetNetwork()))
	if err != nil {
		return nil, cnierr.ToStatus(err)
	}
	if res.Interface == "" {
		// The pod opted out: the shim returns prevResult untouched.
		return &cniv1.AddResponse{}, nil
	}
	out := &cniv1.AddResponse{
		Interfaces: []*cniv1.Interface{{Name: res.Interface, Mac: res.MAC, Sandbox: res.Sandbox}},
		NodeId:     res.NodeID,
		Hostname:   res.Hostname,
	}
	for _, a := range res.Addrs {
		out.Ips = append(out.Ips, &cniv1.IPConfig{Address: a.String(), Interface: 0})
	}
	return out, nil
}

func (s *Server) Del(ctx context.Context, req *cniv1.DelRequest) (*cniv1.DelResponse, error) {
	if err := s.m.Del(ctx, attachmentOf(req.GetAttachment(), req.GetNetwork())); err != nil {
		return nil, cnierr.ToStatus(err)
	}
	return &cniv1.DelResponse{}, nil
}

func (s *Server) Check(ctx context.Context, req *cniv1.CheckRequest) (*cniv1.CheckResponse, error) {
	a := attachmentOf(req.GetAttachment(), req.GetNetwork())
	if err := s.m.Check(ctx, a); err != nil {
		return nil, cnierr.ToStatus(err)
	}
	return &cniv1.CheckResponse{OptedOut: s.m.OptedOut(a.ContainerID)}, nil
}

func (s *Server) GC(ctx context.Context, req *cniv1.GCRequest) (*cniv1.GCResponse, error) {
	valid := make([]Attachment, 0, len(req.GetValid()))
	for _, a := range req.GetValid() {
		valid = append(valid, attachmentOf(a, req.GetNetwork()))
	}
	n, err := s.m.GC(ctx, req.GetNetwork(), valid)
	if err != nil {
		return nil, cnierr.ToStatus(err)
	}
	return &cniv1.GCResponse{Removed: int32(n)}, nil
}

func (s *Server) Status(ctx context.Context, req *cniv1.StatusRequest) (*cniv1.StatusResponse, error) {
	n, rerr := s.m.Status()
	out := &cniv1.StatusResponse{Ready: rerr == nil, Pods: int32(n)}
	if rerr != nil {
		out.Message = rerr.Error()
	} else {
		out.Message = s.m.PoolStatus().String()
	}
	return out, nil
}
