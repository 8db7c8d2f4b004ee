package pod

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// NewNodeCommand is `tsymbiote node`: the tailscale-cni daemon of one
// Kubernetes node.
func NewNodeCommand(getenv func(string) string) *cobra.Command {
	_ = getenv
	return newNodeCommand(&options{clients: kubeClients, onNode: isOnNode})
}

func newNodeCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "The tailscale-cni daemon of a Kubernetes node: its logs, a restart",
		Long: `The tailscale-cni daemon of one Kubernetes node, found by the chart's label
(` + DaemonSelector + `) in any namespace: print or follow its log, or
restart it (delete its pod; the DaemonSet makes a new one, and the pods'
tailnet nodes keep their identities across it).`,
		SilenceUsage: true,
	}
	o.addFlags(cmd)
	_ = cmd.PersistentFlags().MarkHidden("via")
	cmd.PersistentPreRun = quietClientGo
	cmd.AddCommand(o.logsCommand(), o.restartCommand())
	return cmd
}

func (o *options) logsCommand() *cobra.Command {
	var (
		follow    bool
		tail      int64
		container string
	)
	cmd := &cobra.Command{
		Use:   "logs <node>",
		Short: "Print (or follow) the node's tailscale-cni daemon log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, cs, err := o.clients(o)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !follow {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, o.timeout)
				defer cancel()
			}
			d, err := DaemonOn(ctx, cs, args[0])
			if err != nil {
				return err
			}
			opts := &corev1.PodLogOptions{Container: container, Follow: follow}
			if tail >= 0 {
				opts.TailLines = &tail
			}
			rc, err := cs.CoreV1().Pods(d.Namespace).GetLogs(d.Name, opts).Stream(ctx)
			if err != nil {
				return fmt.Errorf("log of %s/%s (%s): %w", d.Namespace, d.Name, container, err)
			}
			defer rc.Close()
			fmt.Fprintf(cmd.ErrOrStderr(), "# %s/%s on node %s, container %s\n", d.Namespace, d.Name, args[0], container)
			if _, err := io.Copy(cmd.OutOrStdout(), rc); err != nil && ctx.Err() == nil {
				return fmt.Errorf("log of %s/%s: %w", d.Namespace, d.Name, err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	f.Int64Var(&tail, "tail", -1, "only the last this many lines (-1: all)")
	f.StringVarP(&container, "container", "c", DaemonContainer, "the daemon pod's container: daemon, or adapter when the chart runs one")
	return cmd
}

func (o *options) restartCommand() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "restart <node>",
		Short: "Restart the node's tailscale-cni daemon and wait for the new one to be ready",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, cs, err := o.clients(o)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			return restart(ctx, cs, cmd.OutOrStdout(), args[0], wait, time.Second)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until the new daemon pod is Ready (bounded by --timeout)")
	return cmd
}

// restart deletes node's daemon pod and, with wait, polls every interval
// until another daemon pod on node is Ready.
func restart(ctx context.Context, cs kubernetes.Interface, out io.Writer, node string, wait bool, interval time.Duration) error {
	d, err := DaemonOn(ctx, cs, node)
	if err != nil {
		return err
	}
	t0 := time.Now()
	err = cs.CoreV1().Pods(d.Namespace).Delete(ctx, d.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &d.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %s/%s: %w", d.Namespace, d.Name, err)
	}
	fmt.Fprintf(out, "deleted %s/%s on node %s\n", d.Namespace, d.Name, node)
	if !wait {
		return nil
	}
	for {
		l, err := cs.CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: DaemonSelector, FieldSelector: "spec.nodeName=" + node})
		if err == nil {
			for _, p := range l.Items {
				if p.UID != d.UID && p.Spec.NodeName == node && p.DeletionTimestamp == nil && ready(&p) {
					fmt.Fprintf(out, "%s/%s is Ready after %.1fs\n", p.Namespace, p.Name, time.Since(t0).Seconds())
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no new tailscale-cni daemon Ready on node %s after %.0fs: %w", node, time.Since(t0).Seconds(), ctx.Err())
		case <-time.After(interval):
		}
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
