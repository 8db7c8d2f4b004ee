package pod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"tailscale.com/client/local"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	"tsymbiote.dhouti.dev/adapter"
)

// Ways to reach a pod's socket (--via).
const (
	ViaAuto  = "auto"  // local when this machine is the pod's node, else exec
	ViaLocal = "local" // the socket on this machine
	ViaExec  = "exec"  // the daemon's relay through the API server
)

// options are the flags every subcommand shares.
type options struct {
	kubeconfig, context string
	via                 string
	timeout             time.Duration
	// clients returns the cluster's config and client; tests substitute
	// fakes.
	clients func(*options) (*rest.Config, kubernetes.Interface, error)
	// onNode reports whether this machine is node; tests substitute it.
	onNode func(ctx context.Context, cs kubernetes.Interface, node string) bool
}

func kubeClients(o *options) (*rest.Config, kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: o.context}).ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, cs, nil
}

func (o *options) addFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&o.context, "context", "", "kubeconfig context (default its current context)")
	f.DurationVar(&o.timeout, "timeout", time.Minute, "give up after this long")
	f.StringVar(&o.via, "via", ViaAuto, "how to reach the pod's socket: auto, local (this machine is its node) or exec (the daemon's container, through the API server)")
}

// conn is a LocalAPI client for one pod's node.
type conn struct {
	*local.Client
	loc   *Located
	via   string
	close func()
}

// connect locates r and opens a LocalAPI client to its node's socket.
func (o *options) connect(ctx context.Context, r Ref) (*conn, error) {
	cfg, cs, err := o.clients(o)
	if err != nil {
		return nil, err
	}
	loc, err := Locate(ctx, cs, r)
	if err != nil {
		return nil, err
	}
	via := o.via
	switch via {
	case ViaAuto:
		via = ViaExec
		if _, err := os.Stat(loc.Socket); err == nil && o.onNode(ctx, cs, loc.Node) {
			via = ViaLocal
		}
	case ViaLocal, ViaExec:
	default:
		return nil, fmt.Errorf("--via %q: want %s, %s or %s", o.via, ViaAuto, ViaLocal, ViaExec)
	}
	tr := &http.Transport{}
	if via == ViaLocal {
		if _, err := os.Stat(loc.Socket); err != nil {
			return nil, fmt.Errorf("pod %s: no socket at %s on this machine: it is not attached to tailscale-cni, or this is not its node %s (try --via %s)", r, loc.Socket, loc.Node, ViaExec)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", loc.Socket)
		}
	} else {
		tr.DialContext = (&execDialer{cfg: cfg, cs: cs, daemon: loc.Daemon, socket: loc.Socket}).DialContext
	}
	return &conn{
		Client: &local.Client{Socket: loc.Socket, UseSocketOnly: true, OmitAuth: true, Transport: tr},
		loc:    loc, via: via, close: tr.CloseIdleConnections,
	}, nil
}

// header is the comment line every subcommand starts with: which pod, on
// which node, reached how.
func (c *conn) header() string {
	how := "its socket " + c.loc.Socket
	if c.via == ViaExec {
		how = "the daemon " + c.loc.Daemon.Namespace + "/" + c.loc.Daemon.Name
	}
	return fmt.Sprintf("# pod %s on node %s, via %s", c.loc.Ref, c.loc.Node, how)
}

// isOnNode reports whether this machine is node: its name is our hostname,
// or one of its addresses is ours. Any doubt (no rights to read nodes)
// answers no, and the command goes through the API server.
func isOnNode(ctx context.Context, cs kubernetes.Interface, node string) bool {
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return false
	}
	host, _ := os.Hostname()
	ours := map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				ours[p.Addr()] = true
			}
		}
	}
	for _, a := range n.Status.Addresses {
		switch a.Type {
		case corev1.NodeHostName:
			if host != "" && strings.EqualFold(a.Address, host) {
				return true
			}
		case corev1.NodeInternalIP, corev1.NodeExternalIP:
			if ip, err := netip.ParseAddr(a.Address); err == nil && !ip.IsLoopback() && ours[ip] {
				return true
			}
		}
	}
	return false
}

// quietClientGo keeps client-go's own log off the output: closing an exec
// stream, which every command does, makes it log "use of closed network
// connection" errors that say nothing about the command. Errors that matter
// come back as errors.
func quietClientGo(*cobra.Command, []string) {
	klog.SetLogger(logr.Discard())
}

// NewCommand is `tsymbiote pod`.
func NewCommand(getenv func(string) string) *cobra.Command {
	_ = getenv // the kubeconfig loader reads $KUBECONFIG itself
	o := &options{clients: kubeClients, onNode: isOnNode}
	return newPodCommand(o)
}

func newPodCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pod",
		Short: "Debug a tailscale-cni pod's tailnet node: status, ping, netcheck, whois",
		Long: `Debug the tailnet node tailscale-cni runs for a pod, as the stock tailscale
CLI would on that pod: the pod is named <namespace>/<pod>.

The command finds the pod with your kubeconfig, checks that tailscale-cni can
have attached it, and finds the tailscale-cni daemon on its node. On that
node (as root) it talks to the pod's LocalAPI socket directly; anywhere else
it runs the daemon's relay in the daemon's container through the API server
(pods/exec), so it needs get and list on pods and create on pods/exec in the
chart's namespace.`,
		SilenceUsage: true,
	}
	o.addFlags(cmd)
	_ = cmd.PersistentFlags().MarkHidden("via")
	cmd.PersistentPreRun = quietClientGo
	cmd.AddCommand(o.statusCommand(), o.pingCommand(), o.netcheckCommand(), o.whoisCommand())
	return cmd
}

// run parses the pod argument, connects, and runs f with a deadline.
func (o *options) run(cmd *cobra.Command, podArg string, f func(ctx context.Context, c *conn, out io.Writer) error) error {
	r, err := ParseRef(podArg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	c, err := o.connect(ctx, r)
	if err != nil {
		return err
	}
	defer c.close()
	out := cmd.OutOrStdout()
	fmt.Fprintln(out, c.header())
	return f(ctx, c, out)
}

func (o *options) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status <namespace>/<pod>",
		Short: "The pod's node and its peers, as `tailscale status` prints them",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, args[0], func(ctx context.Context, c *conn, out io.Writer) error {
				st, err := c.Status(ctx)
				if err != nil {
					return fmt.Errorf("status of %s: %w", c.loc.Ref, err)
				}
				return printStatus(out, st)
			})
		},
	}
}

func (o *options) pingCommand() *cobra.Command {
	var (
		count       int
		untilDirect bool
		each        time.Duration
		kind        string
	)
	cmd := &cobra.Command{
		Use:   "ping <namespace>/<pod> <peer>",
		Short: "Ping a peer from the pod's node, as `tailscale ping` does: latency and path",
		Long: `Ping a peer from the pod's node and print each pong with its latency and path
(the peer's endpoint when direct, DERP(<region>) when relayed), as tailscale
ping does. The peer is a tailnet IP, a hostname or MagicDNS name, or another
tailscale-cni pod as <namespace>/<pod>.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pt, ok := map[string]tailcfg.PingType{"disco": tailcfg.PingDisco, "tsmp": tailcfg.PingTSMP, "icmp": tailcfg.PingICMP}[kind]
			if !ok {
				return fmt.Errorf("--type %q: want disco, tsmp or icmp", kind)
			}
			if count < 1 || count > 100 {
				return fmt.Errorf("--c %d: want 1 to 100", count)
			}
			return o.run(cmd, args[0], func(ctx context.Context, c *conn, out io.Writer) error {
				ip, err := o.peerIP(ctx, c, args[1])
				if err != nil {
					return err
				}
				return ping(ctx, c, out, ip, pt, count, each, untilDirect && pt == tailcfg.PingDisco)
			})
		},
	}
	f := cmd.Flags()
	f.IntVarP(&count, "c", "c", 10, "at most this many pings")
	f.BoolVar(&untilDirect, "until-direct", true, "stop once a pong came over a direct path")
	f.DurationVar(&each, "ping-timeout", 5*time.Second, "how long to wait for each pong")
	f.StringVar(&kind, "type", "disco", "disco (the path, without WireGuard), tsmp or icmp (through WireGuard)")
	return cmd
}

// peerIP resolves a ping's peer: an IP as is, another pod through its own
// node, a name through the pod's node's peers.
func (o *options) peerIP(ctx context.Context, c *conn, peer string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(peer); err == nil {
		return ip, nil
	}
	if strings.Contains(peer, "/") {
		r, err := ParseRef(peer)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("peer: %w", err)
		}
		pc, err := o.connect(ctx, r)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("peer: %w", err)
		}
		defer pc.close()
		st, err := pc.StatusWithoutPeers(ctx)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("peer %s: status: %w", r, err)
		}
		if st.Self == nil || len(st.Self.TailscaleIPs) == 0 {
			return netip.Addr{}, fmt.Errorf("peer %s has no tailnet address yet", r)
		}
		return st.Self.TailscaleIPs[0], nil
	}
	st, err := c.Status(ctx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("status of %s: %w", c.loc.Ref, err)
	}
	want := strings.ToLower(strings.TrimSuffix(peer, "."))
	var found []netip.Addr
	for _, p := range st.Peer {
		dns := strings.ToLower(strings.TrimSuffix(p.DNSName, "."))
		label, _, _ := strings.Cut(dns, ".")
		if len(p.TailscaleIPs) > 0 && (strings.EqualFold(p.HostName, want) || dns == want || label == want) {
			found = append(found, p.TailscaleIPs[0])
		}
	}
	switch len(found) {
	case 0:
		return netip.Addr{}, fmt.Errorf("peer %q: no peer of %s has that IP, hostname or MagicDNS name", peer, c.loc.Ref)
	case 1:
		return found[0], nil
	}
	return netip.Addr{}, fmt.Errorf("peer %q is ambiguous among %s's peers (%v); use an IP", peer, c.loc.Ref, found)
}

// pingClient is what ping needs of a LocalAPI client.
type pingClient interface {
	PingWithOpts(context.Context, netip.Addr, tailcfg.PingType, local.PingOpts) (*ipnstate.PingResult, error)
}

func ping(ctx context.Context, c *conn, out io.Writer, ip netip.Addr, pt tailcfg.PingType, count int, each time.Duration, untilDirect bool) error {
	return pingLoop(ctx, c.Client, out, ip, pt, count, each, untilDirect, time.Second)
}

// pingLoop pings up to count times, pausing gap between pings, as tailscale
// ping does; with untilDirect it stops at the first direct pong.
func pingLoop(ctx context.Context, c pingClient, out io.Writer, ip netip.Addr, pt tailcfg.PingType, count int, each time.Duration, untilDirect bool, gap time.Duration) error {
	pongs := 0
	for i := 1; i <= count; i++ {
		pctx, cancel := context.WithTimeout(ctx, each)
		pr, err := c.PingWithOpts(pctx, ip, pt, local.PingOpts{})
		timedOut := errors.Is(pctx.Err(), context.DeadlineExceeded)
		cancel()
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("ping %s: %w", ip, ctx.Err())
		case err != nil && timedOut:
			fmt.Fprintf(out, "ping %q timed out\n", ip)
		case err != nil:
			return fmt.Errorf("ping %s: %w", ip, err)
		case pr.Err != "":
			return fmt.Errorf("ping %s: %s", ip, pr.Err)
		default:
			pongs++
			fmt.Fprintln(out, pongLine(pr, pt))
			if untilDirect && pr.Endpoint != "" {
				return nil
			}
		}
		if i < count {
			select {
			case <-ctx.Done():
				return fmt.Errorf("ping %s: %w", ip, ctx.Err())
			case <-time.After(gap):
			}
		}
	}
	switch {
	case pongs == 0:
		return fmt.Errorf("ping %s: no reply", ip)
	case untilDirect:
		return fmt.Errorf("ping %s: direct connection not established after %d pings (pongs came through DERP)", ip, count)
	}
	return nil
}

func (o *options) netcheckCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "netcheck <namespace>/<pod>",
		Short: "The pod's node's own last netcheck, as `tailscale netcheck` prints it",
		Long: `Print the netcheck the pod's node ran last: its home DERP, its latency to each
DERP region, UDP and IPv6, as tailscale netcheck prints them. The pod's
node sends from the tailscale-cni daemon's sockets, not from the pod's
network namespace, so this is the pod's view; it is what the WebUI shows
for the pod through the node's adapter.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, args[0], func(ctx context.Context, c *conn, out io.Writer) error {
				r, err := adapter.ReportedNetcheck(ctx, c.Client, c.loc.Ref.target())
				if err != nil {
					return fmt.Errorf("netcheck of %s: %w", c.loc.Ref, err)
				}
				printNetcheck(out, r)
				return nil
			})
		},
	}
}

func (o *options) whoisCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whois <namespace>/<pod> <ip[:port]>",
		Short: "Which node and user own a tailnet address, as the pod's node sees it",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[1]
			if !isIP(addr) {
				if _, err := netip.ParseAddrPort(addr); err != nil {
					return fmt.Errorf("address %q: want a tailnet IP or ip:port", addr)
				}
			}
			return o.run(cmd, args[0], func(ctx context.Context, c *conn, out io.Writer) error {
				w, err := c.WhoIs(ctx, addr)
				if errors.Is(err, local.ErrPeerNotFound) {
					return fmt.Errorf("whois %s: no node of %s's tailnet owns it", addr, c.loc.Ref)
				}
				if err != nil {
					return fmt.Errorf("whois %s from %s: %w", addr, c.loc.Ref, err)
				}
				printWhoIs(out, w)
				return nil
			})
		},
	}
}
