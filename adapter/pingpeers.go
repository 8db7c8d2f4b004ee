package adapter

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

const (
	// maxPingPeers bounds one PingPeers request: a node with more peers
	// than this is beyond any tailnet the WebUI draws.
	maxPingPeers = 4096
	// defaultPingPeersConcurrency is how many of a PingPeers request's
	// peers are pinged at once when it does not say. The LocalAPI serves
	// each ping on its own goroutine, mostly waiting for the answer (a
	// disco ping is one small UDP or DERP packet each way), so a daemon
	// takes a few hundred at once; maxPingPeersConcurrency keeps one
	// caller from crowding out the daemon's other clients. A node's
	// slowest peers set how long a ping of all its peers takes: 250
	// peers at up to 500 ms took 6.3 s at 16 at once, 1.6 s at 64, and
	// take one round trip, the farthest, at 256.
	defaultPingPeersConcurrency = 16
	maxPingPeersConcurrency     = 256
)

// PingPeers pings every peer of req like Ping, req.concurrency at once,
// and sends each peer's answer as soon as it has it. When the stream ends,
// for whatever reason, no goroutine of it is left.
func (s *Service) PingPeers(req *adapterv1.PingPeersRequest, stream grpc.ServerStreamingServer[adapterv1.PingPeersResponse]) error {
	tg, d, err := s.target(req.GetTarget())
	if err != nil {
		return err
	}
	peers := req.GetPeers()
	if len(peers) == 0 {
		return invalidArg("peers is empty; name at least one peer's tailnet IP")
	}
	if len(peers) > maxPingPeers {
		return invalidArg("peers has %d entries; at most %d allowed", len(peers), maxPingPeers)
	}
	ips := make([]netip.Addr, len(peers))
	for i, p := range peers {
		if err := checkLen(fmt.Sprintf("peers[%d]", i), p); err != nil {
			return err
		}
		ip, err := netip.ParseAddr(p)
		if err != nil {
			return invalidArg("peers[%d] %q is not an IP address; PingPeers takes tailnet IPs (Ping also takes names)", i, p)
		}
		ips[i] = ip
	}
	pt, count, wait, err := pingParams(req.GetType(), req.GetCount(), req.GetTimeout())
	if err != nil {
		return err
	}

	conc := int(req.GetConcurrency())
	if conc == 0 {
		conc = defaultPingPeersConcurrency
	}
	if conc < 0 || conc > maxPingPeersConcurrency {
		return invalidArg("concurrency is %d; it must be between 1 and %d", conc, maxPingPeersConcurrency)
	}

	ctx, cancel := context.WithCancel(stream.Context())
	type answer struct {
		msg *adapterv1.PingPeersResponse
		err error
	}
	next := make(chan int)
	answers := make(chan answer)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (deferred later, runs first) stops the workers
	defer cancel()
	for range min(conc, len(ips)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				start := time.Now()
				resp, err := s.ping(ctx, tg, d, ips[i], pt, count, wait)
				a := answer{err: err}
				if err == nil {
					a.msg = &adapterv1.PingPeersResponse{Index: int32(i), Peer: peers[i], Ping: resp, Took: durationpb.New(time.Since(start))}
				}
				select {
				case answers <- a:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(next)
		for i := range ips {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	// Only this goroutine sends on the stream: gRPC's Send is not safe to
	// call concurrently.
	for range ips {
		select {
		case a := <-answers:
			if a.err != nil {
				return a.err
			}
			if err := stream.Send(a.msg); err != nil {
				return err
			}
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return nil
}
