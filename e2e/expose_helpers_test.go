package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"tailscale.com/tsnet"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/testca"
)

// tlsSecretYAML is a kubernetes.io/tls Secret.
func tlsSecretYAML(ns, name string, certPEM, keyPEM []byte) string {
	indent := func(b []byte) string {
		return "    " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n    ")
	}
	return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n%s\n  tls.key: |\n%s\n",
		name, ns, indent(certPEM), indent(keyPEM))
}

// resolveMagicDNS resolves name to its IPv4 address with the tailnet's
// MagicDNS: first a query to 100.100.100.100:53 through ts's own Dial, then,
// when that finds no record, the same query through ts's LocalAPI, which
// asks the node's MagicDNS resolver directly. With tailscale v1.102.5 the
// first answers NXDOMAIN for peers' names (a query from the node's own
// netstack reaches the resolver as if from a peer), while the second
// answers; via says which one did.
func resolveMagicDNS(ctx context.Context, ts *tsnet.Server, name string) (addr netip.Addr, via string, err error) {
	fqdn := strings.TrimSuffix(name, ".") + "."
	q, err := dnsmessage.NewName(fqdn)
	if err != nil {
		return netip.Addr{}, "", err
	}
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: uint16(time.Now().UnixNano()), RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: q, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, err := msg.Pack()
	if err != nil {
		return netip.Addr{}, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	dialAnswer, dialErr := func() ([]byte, error) {
		c, err := ts.Dial(ctx, "udp", "100.100.100.100:53")
		if err != nil {
			return nil, fmt.Errorf("dialing MagicDNS: %w", err)
		}
		defer c.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		if _, err := c.Write(b); err != nil {
			return nil, err
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("reading MagicDNS answer: %w", err)
		}
		return buf[:n], nil
	}()
	if dialErr == nil {
		if a, rcode, ok := firstA(dialAnswer); ok {
			return a, "100.100.100.100:53 through tsnet Dial", nil
		} else {
			dialErr = fmt.Errorf("no A record (rcode %v)", rcode)
		}
	}
	lc, err := ts.LocalClient()
	if err != nil {
		return netip.Addr{}, "", err
	}
	ans, _, err := lc.QueryDNS(ctx, fqdn, "A")
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("MagicDNS: through Dial: %w; through LocalAPI: %w", dialErr, err)
	}
	a, rcode, ok := firstA(ans)
	if !ok {
		return netip.Addr{}, "", fmt.Errorf("MagicDNS has no A record for %s (through Dial: %w; through LocalAPI: rcode %v)", name, dialErr, rcode)
	}
	return a, fmt.Sprintf("LocalAPI QueryDNS (through Dial: %v)", dialErr), nil
}

// firstA is the first A record of a DNS answer.
func firstA(b []byte) (netip.Addr, dnsmessage.RCode, bool) {
	var ans dnsmessage.Message
	if err := ans.Unpack(b); err != nil {
		return netip.Addr{}, dnsmessage.RCodeFormatError, false
	}
	for _, a := range ans.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			return netip.AddrFrom4(r.A), ans.RCode, true
		}
	}
	return netip.Addr{}, ans.RCode, false
}

// tailnetHTTP is an HTTP client that dials over ts, resolving names with
// resolveMagicDNS, and trusts pool for HTTPS; it does not follow redirects.
func tailnetHTTP(ts *tsnet.Server, pool *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				if _, perr := netip.ParseAddr(host); perr != nil {
					ip, _, err := resolveMagicDNS(ctx, ts, host)
					if err != nil {
						return nil, err
					}
					host = ip.String()
				}
				return ts.Dial(ctx, network, net.JoinHostPort(host, port))
			},
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// udpEcho sends msg to addr over ts and returns the answer.
func udpEcho(ctx context.Context, ts *tsnet.Server, addr, msg string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := ts.Dial(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// addTagOwners extends the node's Headscale policy with tags owned by its
// user, and returns a function that restores the policy.
func addTagOwners(ctx context.Context, t *testing.T, cp controlplane.Client, tags ...string) func() {
	t.Helper()
	pol, err := cp.GetPolicy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var add strings.Builder
	for _, tag := range tags {
		fmt.Fprintf(&add, "\n    %q: [\"tsymbiote@\"],", tag)
	}
	i := strings.Index(pol.Body, `"tagOwners": {`)
	if i < 0 {
		t.Fatalf("policy has no tagOwners:\n%s", pol.Body)
	}
	i += len(`"tagOwners": {`)
	body := pol.Body[:i] + add.String() + pol.Body[i:]
	if _, err := cp.SetPolicy(ctx, body, pol.Version); err != nil {
		t.Fatal(err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := cp.SetPolicy(ctx, pol.Body, ""); err != nil {
			t.Errorf("restoring the policy: %v", err)
		}
	}
}

// deviceNamed is the Headscale node with hostname or given name name.
func deviceNamed(ctx context.Context, cp controlplane.Client, name string) (*controlplane.Device, error) {
	devs, err := cp.ListDevices(ctx, controlplane.ListOptions{})
	if err != nil {
		return nil, err
	}
	for i := range devs {
		if devs[i].Name == name || devs[i].Hostname == name {
			return &devs[i], nil
		}
	}
	return nil, fmt.Errorf("no node %s in Headscale", name)
}

var errStill = errors.New("still there")

// exposeArtifacts is bin/test-artifacts/<test>/logs, for logs on failure.
func exposeArtifacts(t *testing.T) string {
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "bin", "test-artifacts", t.Name(), "logs")
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// poolOrNil is the CA's pool; nil (the system's) before there is a CA.
func poolOrNil(ca *testca.CA) *x509.CertPool {
	if ca == nil {
		return nil
	}
	return ca.Pool
}

// tlsClient is a TLS client on c for name, trusting only ca.
func tlsClient(c net.Conn, name string, ca *testca.CA) *tls.Conn {
	return tls.Client(c, &tls.Config{ServerName: name, RootCAs: ca.Pool})
}
