package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// The cluster DNS, where kubelet points every ClusterFirst pod
// (--cluster-dns, --cluster-domain), at kubeadm's conventional address.
const (
	ClusterDNSIP  = "10.96.0.10"
	ClusterDomain = "cluster.local"
)

// clusterDNS is a small kube-dns: it answers A queries for
// <service>.<namespace>.svc.<ClusterDomain> with the Service's ClusterIP,
// read from the API server, and NXDOMAIN for every other name (the node
// is offline: there is nothing upstream). It runs in the harness's process
// on the node's address, and Service kube-system/kube-dns at ClusterDNSIP
// (an EndpointSlice of the node's address, no selector) sends pods to it
// through kube-proxy: no image to build and no pod to schedule, where
// CoreDNS cannot be fetched.
type clusterDNS struct {
	api    string
	client *http.Client
	udp    net.PacketConn
	tcp    net.Listener
	wg     sync.WaitGroup

	mu       sync.Mutex
	services map[string]netip.Addr // "name.namespace" -> ClusterIP
	fetched  time.Time
}

// startClusterDNS serves DNS on NodeIP:53 and makes Service
// kube-system/kube-dns point there.
func (c *Cluster) startClusterDNS(ctx context.Context, _ Options) error {
	pki := func(n string) string { return c.path("pki", n) }
	cert, err := tls.LoadX509KeyPair(pki("admin.crt"), pki("admin.key"))
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(pki("ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	d := &clusterDNS{
		api: c.APIServer,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}
	addr := net.JoinHostPort(c.NodeIP, "53")
	if d.udp, err = net.ListenPacket("udp4", addr); err != nil {
		return fmt.Errorf("cluster DNS: %w", err)
	}
	if d.tcp, err = net.Listen("tcp4", addr); err != nil {
		d.udp.Close()
		return fmt.Errorf("cluster DNS: %w", err)
	}
	c.mu.Lock()
	c.dns = d
	c.mu.Unlock()
	d.wg.Go(d.serveUDP)
	d.wg.Go(d.serveTCP)
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: %[1]s
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: tsymbiote-harness}
addressType: IPv4
endpoints:
  - addresses: [%[2]s]
    conditions: {ready: true}
ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`, ClusterDNSIP, c.NodeIP)
	if out, err := c.KubectlIn(ctx, strings.NewReader(manifest), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("cluster DNS service: %w: %s", err, out)
	}
	// Ready once kube-proxy sends the Service's address here.
	return c.waitUntil(ctx, "kube-proxy", func(ctx context.Context) error {
		return lookupA(ctx, ClusterDNSIP, "kube-dns.kube-system.svc."+ClusterDomain+".", ClusterDNSIP)
	})
}

// stop closes the listeners and waits for the server's goroutines.
func (d *clusterDNS) stop() {
	d.udp.Close()
	d.tcp.Close()
	d.wg.Wait()
}

func (d *clusterDNS) serveUDP() {
	buf := make([]byte, 4096)
	for {
		n, from, err := d.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if out := d.answer(buf[:n]); out != nil {
			_, _ = d.udp.WriteTo(out, from)
		}
	}
}

func (d *clusterDNS) serveTCP() {
	for {
		conn, err := d.tcp.Accept()
		if err != nil {
			return
		}
		d.wg.Go(func() {
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			var l [2]byte
			if _, err := io.ReadFull(conn, l[:]); err != nil {
				return
			}
			q := make([]byte, binary.BigEndian.Uint16(l[:]))
			if _, err := io.ReadFull(conn, q); err != nil {
				return
			}
			out := d.answer(q)
			if out == nil {
				return
			}
			binary.BigEndian.PutUint16(l[:], uint16(len(out)))
			_, _ = conn.Write(append(l[:], out...))
		})
	}
}

// answer answers one query; nil when q is not one.
func (d *clusterDNS) answer(q []byte) []byte {
	var m dnsmessage.Message
	if m.Unpack(q) != nil || len(m.Questions) != 1 {
		return nil
	}
	m.Response, m.Authoritative, m.RecursionAvailable = true, true, false
	m.Answers, m.Authorities, m.Additionals = nil, nil, nil
	qq := m.Questions[0]
	name := strings.ToLower(strings.TrimSuffix(qq.Name.String(), "."))
	svc, ok := strings.CutSuffix(name, ".svc."+ClusterDomain)
	ip, found := netip.Addr{}, false
	if ok && strings.Count(svc, ".") == 1 {
		ip, found = d.lookup(svc)
	}
	switch {
	case !found:
		m.RCode = dnsmessage.RCodeNameError
	case qq.Type == dnsmessage.TypeA && ip.Is4():
		m.Answers = []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: qq.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
			Body:   &dnsmessage.AResource{A: ip.As4()},
		}}
	}
	out, err := m.Pack()
	if err != nil {
		return nil
	}
	return out
}

// lookup returns the ClusterIP of "name.namespace", reading the Services
// again when the copy is older than a second (tests make Services and
// resolve them at once).
func (d *clusterDNS) lookup(svc string) (netip.Addr, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ip, ok := d.services[svc]; ok && time.Since(d.fetched) < 30*time.Second {
		return ip, true
	}
	if time.Since(d.fetched) > time.Second {
		if s, err := d.fetch(); err == nil {
			d.services, d.fetched = s, time.Now()
		}
	}
	ip, ok := d.services[svc]
	return ip, ok
}

func (d *clusterDNS) fetch() (map[string]netip.Addr, error) {
	resp, err := d.client.Get(d.api + "/api/v1/services")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("listing services: %s", resp.Status)
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name, Namespace string } `json:"metadata"`
			Spec     struct {
				ClusterIP string `json:"clusterIP"`
			} `json:"spec"`
		} `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, err
	}
	out := map[string]netip.Addr{}
	for _, s := range list.Items {
		if ip, err := netip.ParseAddr(s.Spec.ClusterIP); err == nil {
			out[s.Metadata.Name+"."+s.Metadata.Namespace] = ip
		}
	}
	return out, nil
}

// lookupA asks server:53 for name's A record and wants want.
func lookupA(ctx context.Context, server, name, want string) error {
	q, err := (&dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 53, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}).Pack()
	if err != nil {
		return err
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "udp4", net.JoinHostPort(server, "53"))
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write(q); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil {
		return err
	}
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok && netip.AddrFrom4(r.A).String() == want {
			return nil
		}
	}
	return errors.New(name + " not answered yet")
}
