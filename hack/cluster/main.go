// The tsymbiote-cluster command (`make cluster`) runs a one-node Kubernetes
// cluster on this host for a person: the pinned control plane, kubelet and
// kube-proxy from ./bin, Debian's containerd, a bridge network, a Headscale
// with MagicDNS that pods reach, and TSymbiote's images (`make images`)
// loaded into containerd. It prints how to reach it, then waits for Ctrl-C
// and puts the host back as it was. It needs root.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"tsymbiote.dhouti.dev/testkit/cluster"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		log.Fatalf("cluster: %v", err)
	}
}

// options are the command's flags.
type options struct {
	dir, nodeIP, images string
	exitWhenReady       bool
}

func newCommand() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "tsymbiote-cluster",
		Short: "Run a one-node Kubernetes cluster with TSymbiote's images until Ctrl-C",
		Args:  cobra.NoArgs,
		// Past flag parsing an error is no usage mistake.
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, log.Printf, cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "", "directory for the cluster's files (PKI, data, logs); must be empty; a new one under $TMPDIR when empty. Removed on exit")
	f.StringVar(&o.nodeIP, "node-ip", "10.213.0.1", "the node's IPv4 address, on a veth pair the command makes: pick one no network of this host uses")
	f.StringVar(&o.images, "images", "bin/images", "directory of image tarballs to load (make images)")
	f.BoolVar(&o.exitWhenReady, "exit-when-ready", false, "stop the cluster as soon as it is ready (a smoke test of this command)")
	return cmd
}

func run(ctx context.Context, logf func(string, ...any), out io.Writer, o options) error {
	imgs, err := filepath.Glob(filepath.Join(o.images, "*.tar"))
	if err != nil {
		return err
	}
	if len(imgs) == 0 {
		return fmt.Errorf("no images in %s: run make images first", o.images)
	}
	if o.dir == "" {
		o.dir = filepath.Join(os.TempDir(), fmt.Sprintf("tsymbiote-cluster-%d", os.Getpid()))
	}
	start, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c, err := cluster.StartIn(start, o.dir, cluster.Options{NodeIP: o.nodeIP, Images: imgs, Logf: logf})
	if err != nil {
		return err
	}
	values, err := writeValues(c)
	if err == nil {
		printGuide(out, c, values)
		if !o.exitWhenReady {
			<-ctx.Done()
			logf("stopping the cluster and restoring the host")
		}
	}
	return errors.Join(err, c.Stop())
}

// writeValues writes Helm values for both charts that point them at the
// cluster's Headscale. The API key is a secret: it goes into a file only
// root can read, never into the terminal.
func writeValues(c *cluster.Cluster) (string, error) {
	path := filepath.Join(c.Dir, "headscale-values.yaml")
	v := fmt.Sprintf(`# Values for charts/tailscale-cni and charts/tsymbiote-operator: this
# cluster's Headscale. Contains an API key: keep it private.
controlPlane:
  headscaleURL: %[1]s
  headscaleAPIKey: %[2]s
  secretValues:
    HEADSCALE_URL: %[1]s
    HEADSCALE_API_KEY: %[2]s
`, c.Headscale.URL, c.Headscale.APIKey)
	return path, os.WriteFile(path, []byte(v), 0o600)
}

func printGuide(out io.Writer, c *cluster.Cluster, values string) {
	fmt.Fprintf(out, `
The cluster is ready: one node, %[1]s, at %[2]s.

  export KUBECONFIG=%[3]s
  bin/kubectl get nodes

Headscale (MagicDNS domain tsymbiote.test) listens at %[4]s; Helm values
pointing both charts at it are in %[5]s:

  bin/helm install tailscale-cni charts/tailscale-cni -n kube-system -f %[5]s
  bin/helm install tsymbiote-operator charts/tsymbiote-operator -n tsymbiote --create-namespace -f %[5]s

The images from bin/images are loaded; pods use them as the charts name
them. Component logs are in %[6]s. Ctrl-C stops the cluster and removes
everything it made on this host.
`, c.NodeName, c.NodeIP, c.Kubeconfig, c.Headscale.URL, values, filepath.Join(c.Dir, "logs"))
}
