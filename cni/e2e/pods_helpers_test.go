package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/dns/dnsmessage"
)

// clusterDNS is a stand-in for the cluster's DNS (CoreDNS, kube-dns) on a
// host veth address of its own: it knows one Service name, answers
// NXDOMAIN for everything else, and counts what it was asked.
type clusterDNS struct {
	addr    string // IPv4, port 53
	queries atomic.Int64
}

// serviceName and serviceIP are the one record clusterDNS serves.
const (
	serviceName = "kube-dns.kube-system.svc.cluster.local."
	serviceIP   = "10.96.0.10"
)

func startClusterDNS(t testing.TB, id string, n int) *clusterDNS {
	t.Helper()
	addr := fmt.Sprintf("10.252.%d.1", n)
	hostVeth(t, "tcd"+id, addr+"/30")
	d := &clusterDNS{addr: addr}
	pc, err := net.ListenPacket("udp4", net.JoinHostPort(addr, "53"))
	if err != nil {
		t.Fatalf("cluster DNS stand-in: %v", err)
	}
	ln, err := net.Listen("tcp4", net.JoinHostPort(addr, "53"))
	if err != nil {
		pc.Close()
		t.Fatalf("cluster DNS stand-in: %v", err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); ln.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := d.answer(buf[:n]); out != nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				out := d.answer(q)
				binary.BigEndian.PutUint16(l[:], uint16(len(out)))
				_, _ = c.Write(append(l[:], out...))
			}()
		}
	})
	return d
}

func (d *clusterDNS) answer(q []byte) []byte {
	d.queries.Add(1)
	var m dnsmessage.Message
	if m.Unpack(q) != nil || len(m.Questions) != 1 {
		return nil
	}
	m.Response, m.Authoritative = true, true
	qq := m.Questions[0]
	if strings.EqualFold(qq.Name.String(), serviceName) {
		if qq.Type == dnsmessage.TypeA {
			ip := net.ParseIP(serviceIP).To4()
			m.Answers = []dnsmessage.Resource{{
				Header: dnsmessage.ResourceHeader{Name: qq.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
				Body:   &dnsmessage.AResource{A: [4]byte(ip)},
			}}
		}
	} else {
		m.RCode = dnsmessage.RCodeNameError
	}
	out, _ := m.Pack()
	return out
}

// podResolvConf makes `ip netns exec` give p the resolv.conf kubelet
// writes for a ClusterFirst pod (ip netns exec bind-mounts
// /etc/netns/<name>/resolv.conf over /etc/resolv.conf).
func podResolvConf(t testing.TB, p *pod, nameserver string) {
	t.Helper()
	dir := filepath.Join("/etc/netns", p.netns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dir)
		os.Remove("/etc/netns") // only when empty
	})
	conf := fmt.Sprintf("search %s.svc.cluster.local svc.cluster.local cluster.local\nnameserver %s\noptions ndots:5\n", p.ns, nameserver)
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// getent runs `getent hosts name` in p, as an application resolving through
// glibc and the pod's resolv.conf would, and returns its first address
// ("" when not found) and how long it took.
func getent(t testing.TB, p *pod, name string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	out, err := exec.Command("ip", "netns", "exec", p.netns, "getent", "ahostsv4", name).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 2 {
			return "", took
		}
		t.Fatalf("getent hosts %s in %s: %v\n%s", name, p.name, err, out)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return "", took
	}
	return f[0], took
}

// queryIn sends one DNS query of type typ for name to server:53 from
// inside p's netns and returns the answer.
func queryIn(t testing.TB, p *pod, server, name string, typ dnsmessage.Type) (*dnsmessage.Message, time.Duration) {
	t.Helper()
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}},
	}
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	if err := ns.WithNetNSPath(p.path(), func(ns.NetNS) error {
		c, err = net.Dial("udp", net.JoinHostPort(server, "53"))
		return err
	}); err != nil {
		t.Fatalf("dialing %s in %s: %v", server, p.name, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("query %s to %s in %s: %v", name, server, p.name, err)
	}
	took := time.Since(start)
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return &m, took
}

// fakeAPIServer serves pods' metadata over TLS as the API server does, for
// the daemon's annotation reader, and checks its bearer token. It returns
// the daemon's environment to use it.
type fakeAPIServer struct {
	mu   sync.Mutex
	pods map[string]map[string]string // "ns/name" -> annotations
	gets atomic.Int64
}

func startFakeAPIServer(t testing.TB) (*fakeAPIServer, []string) {
	t.Helper()
	f := &fakeAPIServer{pods: map[string]map[string]string{}}
	const token = "e2e-token"
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"kind":"Status","code":401}`, http.StatusUnauthorized)
			return
		}
		var ns, name string
		if _, err := fmt.Sscanf(strings.ReplaceAll(r.URL.Path, "/", " "), " api v1 namespaces %s pods %s", &ns, &name); err != nil {
			http.NotFound(w, r)
			return
		}
		f.gets.Add(1)
		f.mu.Lock()
		ann, ok := f.pods[ns+"/"+name]
		f.mu.Unlock()
		if !ok {
			http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{"name": name, "namespace": ns, "annotations": ann}})
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f, []string{
		"TS_CNI_KUBE_API=" + srv.URL,
		"TS_CNI_KUBE_TOKEN_FILE=" + filepath.Join(dir, "token"),
		"TS_CNI_KUBE_CA_FILE=" + filepath.Join(dir, "ca.crt"),
	}
}

func (f *fakeAPIServer) setPod(namespace, name string, ann map[string]string) {
	f.mu.Lock()
	f.pods[namespace+"/"+name] = ann
	f.mu.Unlock()
}

// waitFor polls cond every 250 ms until it holds or timeout passes, and
// returns how long it took.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %v", what, timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
	return time.Since(start)
}
