// Package plugin is the tailscale-cni shim: a chained CNI plugin that hands
// every command to the node daemon over its unix socket and, on ADD, returns
// the previous plugin's result with the pod's ts0 and tailnet addresses
// added. It keeps no state of its own.
package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"tsymbiote.dhouti.dev/cni/internal/cnierr"
	cniv1 "tsymbiote.dhouti.dev/proto/cni/v1"
)

// DefaultDaemonSocket is where the daemon listens unless the netconf says.
const DefaultDaemonSocket = "/var/run/tailscale-cni/daemon.sock"

// DefaultTimeout bounds one call to the daemon. ADD waits for the pod's node
// to register and run, which takes seconds.
const DefaultTimeout = 90 * time.Second

// NetConf is the plugin's entry in a conflist.
type NetConf struct {
	types.PluginConf
	// DaemonSocket is the daemon's unix socket (absolute path).
	DaemonSocket string `json:"daemonSocket,omitempty"`
	// Timeout bounds each call to the daemon, as a Go duration.
	Timeout string `json:"timeout,omitempty"`

	timeout time.Duration
}

// k8sArgs are the CNI_ARGS kubelet passes.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_UID                types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive // CNI_ARGS key
}

// ParseConf parses and checks a netconf. needPrev requires a prevResult
// (ADD: the plugin only works chained after one that made the pod's network).
func ParseConf(data []byte, needPrev bool) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, cnierr.New(cnierr.DecodeFailure, "netconf is not valid JSON", err)
	}
	if c.DaemonSocket == "" {
		c.DaemonSocket = DefaultDaemonSocket
	}
	if !filepath.IsAbs(c.DaemonSocket) {
		return nil, cnierr.Newf(cnierr.InvalidNetConf, "netconf daemonSocket %q must be an absolute path", c.DaemonSocket)
	}
	c.timeout = DefaultTimeout
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 {
			return nil, cnierr.Newf(cnierr.InvalidNetConf, "netconf timeout %q is not a positive duration like \"90s\"", c.Timeout)
		}
		c.timeout = d
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return nil, cnierr.New(cnierr.InvalidNetConf, "netconf prevResult does not parse", err)
		}
	}
	if needPrev && c.PrevResult == nil {
		return nil, cnierr.Newf(cnierr.InvalidNetConf, "netconf has no prevResult: tailscale-cni is a chained plugin and must follow the plugin that sets up the pod's network (bridge, ptp, flannel, ...)")
	}
	return &c, nil
}

func attachment(args *skel.CmdArgs) (*cniv1.Attachment, error) {
	ka := k8sArgs{}
	ka.IgnoreUnknown = true
	if err := types.LoadArgs(args.Args, &ka); err != nil {
		return nil, cnierr.New(cnierr.InvalidEnv, "CNI_ARGS does not parse", err)
	}
	return &cniv1.Attachment{
		ContainerId:  args.ContainerID,
		Netns:        args.Netns,
		Ifname:       args.IfName,
		PodNamespace: string(ka.K8S_POD_NAMESPACE),
		PodName:      string(ka.K8S_POD_NAME),
		PodUid:       string(ka.K8S_POD_UID),
	}, nil
}

// dial connects to the daemon; the connection is lazy, so a missing socket
// is checked first to give a clear message.
func dial(c *NetConf) (cniv1.CNIServiceClient, func(), error) {
	if _, err := os.Stat(c.DaemonSocket); err != nil {
		return nil, nil, cnierr.New(cnierr.TryAgainLater,
			fmt.Sprintf("tailscale-cni daemon socket %s is absent (is the tailscale-cni-daemon running?); try again later", c.DaemonSocket), err)
	}
	conn, err := grpc.NewClient("unix://"+c.DaemonSocket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.DaemonSocket)
		}))
	if err != nil {
		return nil, nil, cnierr.New(cnierr.TryAgainLater, "connecting to the tailscale-cni daemon", err)
	}
	return cniv1.NewCNIServiceClient(conn), func() { conn.Close() }, nil
}

// asCNI turns any error into the *types.Error skel prints.
func asCNI(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	var ce *cnierr.Error
	if !errors.As(err, &ce) {
		ce = cnierr.FromStatus(err)
	}
	return types.NewError(uint(ce.Code), ce.Msg, ce.Details)
}

// Funcs are the plugin's commands for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC}
}

// Versions are the CNI spec versions the plugin speaks: every one libcni
// knows. (Chaining, and so prevResult, needs 0.3.0 or later.)
var Versions = version.All

// call dials the daemon and runs fn against it under the netconf's timeout.
func call(c *NetConf, fn func(context.Context, cniv1.CNIServiceClient) error) error {
	client, done, err := dial(c)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return fn(ctx, client)
}

func cmdAdd(args *skel.CmdArgs) error {
	c, err := ParseConf(args.StdinData, true)
	if err != nil {
		return asCNI(err)
	}
	a, err := attachment(args)
	if err != nil {
		return asCNI(err)
	}
	var resp *cniv1.AddResponse
	if err := call(c, func(ctx context.Context, client cniv1.CNIServiceClient) (err error) {
		resp, err = client.Add(ctx, &cniv1.AddRequest{Attachment: a, Network: c.Name})
		return err
	}); err != nil {
		return asCNI(err)
	}
	res, err := Merge(c.PrevResult, resp)
	if err != nil {
		return asCNI(cnierr.New(cnierr.Internal, "building the CNI result", err))
	}
	return types.PrintResult(res, c.CNIVersion)
}

// Merge returns prev with the daemon's interface and addresses appended.
func Merge(prev types.Result, resp *cniv1.AddResponse) (*current.Result, error) {
	res, err := current.NewResultFromResult(prev)
	if err != nil {
		return nil, fmt.Errorf("converting prevResult: %w", err)
	}
	base := len(res.Interfaces)
	for _, i := range resp.GetInterfaces() {
		res.Interfaces = append(res.Interfaces, &current.Interface{Name: i.GetName(), Mac: i.GetMac(), Sandbox: i.GetSandbox()})
	}
	for _, ip := range resp.GetIps() {
		p, err := netip.ParsePrefix(ip.GetAddress())
		if err != nil {
			return nil, fmt.Errorf("daemon sent address %q: %w", ip.GetAddress(), err)
		}
		idx := base + int(ip.GetInterface())
		res.IPs = append(res.IPs, &current.IPConfig{
			Interface: current.Int(idx),
			Address:   net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		})
	}
	return res, nil
}

func cmdDel(args *skel.CmdArgs) error {
	c, err := ParseConf(args.StdinData, false)
	if err != nil {
		return asCNI(err)
	}
	a, err := attachment(args)
	if err != nil {
		return asCNI(err)
	}
	return asCNI(call(c, func(ctx context.Context, client cniv1.CNIServiceClient) error {
		_, err := client.Del(ctx, &cniv1.DelRequest{Attachment: a, Network: c.Name})
		return err
	}))
}

func cmdCheck(args *skel.CmdArgs) error {
	c, err := ParseConf(args.StdinData, true)
	if err != nil {
		return asCNI(err)
	}
	a, err := attachment(args)
	if err != nil {
		return asCNI(err)
	}
	res, err := current.NewResultFromResult(c.PrevResult)
	if err != nil {
		return asCNI(cnierr.New(cnierr.InvalidNetConf, "prevResult does not convert", err))
	}
	found := false
	for _, i := range res.Interfaces {
		if i.Name == "ts0" && i.Sandbox != "" {
			found = true
		}
	}
	var resp *cniv1.CheckResponse
	if err := call(c, func(ctx context.Context, client cniv1.CNIServiceClient) (err error) {
		resp, err = client.Check(ctx, &cniv1.CheckRequest{Attachment: a, Network: c.Name})
		return err
	}); err != nil {
		return asCNI(err)
	}
	switch {
	case resp.GetOptedOut() && found:
		return asCNI(cnierr.Newf(cnierr.InvalidNetConf, "prevResult lists ts0, but the pod opted out of tailscale-cni and ADD made none"))
	case !resp.GetOptedOut() && !found:
		return asCNI(cnierr.Newf(cnierr.InvalidNetConf, "prevResult lists no ts0 interface: CHECK must get the result ADD returned"))
	}
	return nil
}

// cmdGC (CNI 1.1) hands the runtime's valid attachments to the daemon,
// which removes every other attachment of the network.
func cmdGC(args *skel.CmdArgs) error {
	c, err := ParseConf(args.StdinData, false)
	if err != nil {
		return asCNI(err)
	}
	req := &cniv1.GCRequest{Network: c.Name}
	for _, a := range c.ValidAttachments {
		req.Valid = append(req.Valid, &cniv1.Attachment{ContainerId: a.ContainerID, Ifname: a.IfName})
	}
	return asCNI(call(c, func(ctx context.Context, client cniv1.CNIServiceClient) error {
		_, err := client.GC(ctx, req)
		return err
	}))
}

func cmdStatus(args *skel.CmdArgs) error {
	c, err := ParseConf(args.StdinData, false)
	if err != nil {
		return asCNI(err)
	}
	client, done, err := dial(c)
	if err != nil {
		return types.NewError(cnierr.NotAvailable, "tailscale-cni daemon unreachable", err.Error())
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := client.Status(ctx, &cniv1.StatusRequest{})
	if err != nil {
		return types.NewError(cnierr.NotAvailable, "tailscale-cni daemon unreachable", cnierr.FromStatus(err).Error())
	}
	if !st.GetReady() {
		return types.NewError(cnierr.NotAvailable, "tailscale-cni daemon cannot add pods yet", st.GetMessage())
	}
	return nil
}
