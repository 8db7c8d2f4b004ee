// Package access is `tsymbiote access`: ask for, list, approve, deny and
// revoke just-in-time tailnet access through the WebUI's API over the tailnet.
package access

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"tailscale.com/client/local"
	"tsymbiote.dhouti.dev/webui"
)

// DefaultServer is the WebUI the operator deploys, by its tailnet name.
const DefaultServer = "http://" + webui.DefaultHostnamePrefix + ":" + webui.DefaultPort

// options are the flags every access subcommand shares.
type options struct {
	server  string
	socket  string
	output  string
	timeout time.Duration
}

// NewCommand returns the access command; getenv reads the environment
// (os.Getenv outside tests): TSYMBIOTE_WEBUI_URL is --server's default.
func NewCommand(getenv func(string) string) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "access",
		Short: "Ask for, approve and revoke just-in-time tailnet access through the WebUI",
		Long: `Just-in-time tailnet access: a grant puts your tailnet login in a target's
policy group (for example group:prod) for a while. The commands call the
WebUI's API over the tailnet, which knows who you are from your tailnet
identity (WhoIs): run them on a machine on the tailnet, or pass --socket to
go through a local tailscaled's LocalAPI (userspace networking too).`,
		SilenceUsage: true,
		Args:         cobra.NoArgs,
	}
	f := cmd.PersistentFlags()
	f.StringVar(&o.server, "server", cmp.Or(getenv("TSYMBIOTE_WEBUI_URL"), DefaultServer), "The WebUI's URL on the tailnet ($TSYMBIOTE_WEBUI_URL)")
	f.StringVar(&o.socket, "socket", "", "Dial through this tailscaled's LocalAPI socket instead of the OS's tailnet routing")
	f.StringVarP(&o.output, "output", "o", "table", "Output format: table or json")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "How long one call to the WebUI may take")

	var (
		dur    time.Duration
		reason string
	)
	request := &cobra.Command{
		Use:   "request TARGET",
		Short: "Ask to be in TARGET's policy group for a while",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dur <= 0 || dur%time.Second != 0 {
				return fmt.Errorf("--for %v: want a positive whole number of seconds (e.g. 30m)", dur)
			}
			var r webui.AccessRequest
			if err := o.call(cmd.Context(), http.MethodPost, "/api/access/requests", webui.AccessRequestCreate{Target: args[0], Seconds: int64(dur / time.Second), Reason: reason}, &r); err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), []webui.AccessRequest{r}, time.Now())
		},
	}
	request.Flags().DurationVar(&dur, "for", time.Hour, "How long the grant should last")
	request.Flags().StringVar(&reason, "reason", "", "Why (some targets require one)")

	list := &cobra.Command{
		Use:   "list [targets|" + strings.Join(webui.AccessViews, "|") + "]",
		Short: "List targets, or requests: all (default), mine, pending (that I may approve), active, history",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "all"
			if len(args) == 1 {
				what = args[0]
			}
			if what == "targets" {
				var ts []webui.AccessTarget
				if err := o.call(cmd.Context(), http.MethodGet, "/api/access/targets", nil, &ts); err != nil {
					return err
				}
				return o.printTargets(cmd.OutOrStdout(), ts)
			}
			if !contains(webui.AccessViews, what) {
				return fmt.Errorf("list %q: want targets, %s", what, strings.Join(webui.AccessViews, ", "))
			}
			var ov webui.AccessOverview
			if err := o.call(cmd.Context(), http.MethodGet, "/api/access", nil, &ov); err != nil {
				return err
			}
			var rs []webui.AccessRequest
			for _, r := range ov.Requests {
				if webui.InAccessView(what, r) {
					rs = append(rs, r)
				}
			}
			return o.print(cmd.OutOrStdout(), rs, ov.Now)
		},
	}
	cmd.AddCommand(request, list,
		o.actionCommand("approve", "Approve a pending request (as one of its target's approvers)"),
		o.actionCommand("deny", "Deny a pending request"),
		o.actionCommand("revoke", "End a grant (or cancel a pending request) now"),
	)
	return cmd
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (o *options) actionCommand(action, short string) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   action + " REQUEST",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r webui.AccessRequest
			path := "/api/access/requests/" + url.PathEscape(args[0]) + "/" + action
			if err := o.call(cmd.Context(), http.MethodPost, path, webui.AccessAction{Reason: reason}, &r); err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), []webui.AccessRequest{r}, time.Now())
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "Why, for the history")
	return c
}

// dialer is how the CLI reaches the WebUI: the OS's routing (a machine
// running tailscaled with its TUN), or a tailscaled's LocalAPI.
func (o *options) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if o.socket == "" {
		var d net.Dialer
		return d.DialContext
	}
	lc := &local.Client{Socket: o.socket, UseSocketOnly: true}
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		host, portStr, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", portStr, err)
		}
		// tailscaled resolves a bare tailnet name (MagicDNS) itself.
		return lc.UserDial(ctx, "tcp", host, uint16(port))
	}
}

// call sends one request to the WebUI and decodes its JSON answer into out.
func (o *options) call(ctx context.Context, method, path string, in, out any) error {
	if o.output != "table" && o.output != "json" {
		return fmt.Errorf("--output %q: want table or json", o.output)
	}
	base, err := url.Parse(strings.TrimRight(o.server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("--server %q: want the WebUI's URL, like %s", o.server, DefaultServer)
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base.String()+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// What the WebUI's cross-site check wants from a state-changing call:
	// an Origin naming it and the CSRF header. Harmless on a GET.
	req.Header.Set("Origin", base.Scheme+"://"+base.Host)
	req.Header.Set(webui.CSRFHeader, "1")
	c := &http.Client{Transport: &http.Transport{DialContext: o.dialer(), Proxy: nil}}
	defer c.CloseIdleConnections()
	res, err := c.Do(req)
	if err != nil {
		how := "this machine's tailnet routing"
		if o.socket != "" {
			how = "tailscaled at " + o.socket
		}
		return fmt.Errorf("cannot reach the WebUI at %s through %s: %w (is the WebUI running and this machine on its tailnet? --server and --socket say where)", o.server, how, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading the WebUI's answer: %w", err)
	}
	if res.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 500 {
			msg = msg[:500] + "…"
		}
		switch res.StatusCode {
		case http.StatusForbidden:
			return fmt.Errorf("refused (403): %s", msg)
		case http.StatusNotFound:
			return fmt.Errorf("not found (404): %s", msg)
		}
		return fmt.Errorf("the WebUI answered %s: %s", res.Status, msg)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the WebUI's answer to %s %s is not what this CLI expects (%w); is %s a TSymbiote WebUI of the same version?", method, path, err, o.server)
	}
	return nil
}
