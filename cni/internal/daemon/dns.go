package daemon

import (
	"net/netip"

	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/cni/internal/poddns"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
)

// DNSService is the real PodDNS: it puts the cluster DNS address and
// 100.100.100.100 on the pod's lo and answers there (see poddns). Its
// methods are safe for concurrent use.
type DNSService struct {
	// ClusterDNS is the address in pods' resolv.conf (kubelet's
	// --cluster-dns), where the pod's queries go and where the rest are
	// forwarded.
	ClusterDNS netip.Addr
	Forwarder  *poddns.Forwarder
}

// NewDNSService serves MagicDNS in pods whose resolv.conf names clusterDNS.
func NewDNSService(clusterDNS netip.Addr) *DNSService {
	return &DNSService{ClusterDNS: clusterDNS, Forwarder: &poddns.Forwarder{Upstream: netip.AddrPortFrom(clusterDNS, 53)}}
}

// Addrs are the addresses it serves in every pod.
func (d *DNSService) Addrs() []netip.Addr {
	return []netip.Addr{d.ClusterDNS, poddns.QuadHundred}
}

// Start serves one pod until stop, which also takes the addresses off the
// pod's lo (when the pod outlives its attachment, its queries must reach
// the real cluster DNS again).
func (d *DNSService) Start(logf logger.Logf, netnsPath string, node poddns.Node, count poddns.Counter) (func(), error) {
	if err := podnet.AddLoopbackAddrs(netnsPath, d.Addrs()); err != nil {
		return nil, err
	}
	srv, err := poddns.Serve(logf, netnsPath, d.Addrs(), node, d.Forwarder, count)
	if err != nil {
		_ = podnet.RemoveLoopbackAddrs(netnsPath, d.Addrs())
		return nil, err
	}
	return func() {
		srv.Close()
		if err := podnet.RemoveLoopbackAddrs(netnsPath, d.Addrs()); err != nil {
			logf("dns: %v", err)
		}
	}, nil
}
