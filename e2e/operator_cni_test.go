package e2e

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"tsymbiote.dhouti.dev/controlplane"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/proto/contract"
)

// The tailscale-cni release TestOperatorChart runs beside the operator:
// its namespace and how many pods it puts on the CNI.
const (
	opCNINamespace = "tsymbiote-e2e-cni"
	opCNIPods      = 2
)

// servingAs is the adapter's log line saying which tailnet name it joined
// as: the chart names it after the node's hostname, which only the node
// knows.
var servingAs = regexp.MustCompile(`serving on the tailnet as (\S+) `)

// installCNI installs tailscale-cni with its adapter through TestCNIChart's
// helpers, after the host's state is noted for its checks and cleanup.
func (r *operatorRun) installCNI(ctx context.Context) {
	r.cni = &cniTest{t: r.t, c: r.c, ns: opCNINamespace}
	r.cni.snapshotHost()
	// Runs before the operator's cleanup (registered first): the CNI's
	// pods go while its daemon still serves their DEL.
	r.t.Cleanup(r.cni.cleanup)
	// Runs before that cleanup, while the daemon pod and its log are there.
	r.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r.saveLogs(ctx, "cni-end-")
	})
	r.cni.install(map[string]any{"adapter": map[string]any{
		"enabled": true,
		// The node's Headscale serves its DERP over plain HTTP.
		"env": map[string]string{"TS_DEBUG_USE_DERP_HTTP": "1"},
	}})
}

func (r *operatorRun) deployCNIPods(ctx context.Context) { r.cni.deployApp(opCNIPods) }

// cniNodes are the CNI pods' tailnet hostnames, sorted.
func (r *operatorRun) cniNodes() []string {
	var out []string
	if r.cni == nil {
		return out
	}
	for _, p := range r.cni.podNames() {
		out = append(out, r.cni.nodeName(p))
	}
	return out
}

// cniTargets are the targets the CNI adapter should serve, <namespace>_<pod>,
// with the tailnet hostname of each.
func (r *operatorRun) cniTargets() map[string]string {
	out := map[string]string{}
	for _, p := range r.cni.podNames() {
		out[r.cni.ns+"_"+p] = r.cni.nodeName(p)
	}
	return out
}

// callCNIAdapter finds the name the daemon pod's adapter joined as, and
// calls it as the WebUI does: ListTargets must name exactly the CNI's pods,
// each reachable, and Status of each must come from that pod's node.
func (r *operatorRun) callCNIAdapter(ctx context.Context) {
	var pod string
	waitFor(ctx, r.t, "the CNI adapter to join the tailnet", func() error {
		var err error
		if pod, err = r.cni.daemonPod(ctx); err != nil {
			return err
		}
		logs, err := r.c.Kubectl(ctx, "-n", r.cni.ns, "logs", pod, "-c", "adapter")
		if err != nil {
			return err
		}
		m := servingAs.FindStringSubmatch(logs)
		if m == nil {
			// tsnet's retries of Tailscale's DERPs for its bootstrap
			// DNS would hide what the adapter said.
			var said []string
			for line := range strings.SplitSeq(logs, "\n") {
				if !strings.Contains(line, "tlsdial: ") {
					said = append(said, line)
				}
			}
			return fmt.Errorf("adapter log, without tlsdial lines:\n%s", tail(strings.Join(said, "\n"), 30))
		}
		r.cniAdapter = m[1]
		return nil
	})
	r.t.Logf("daemon pod %s runs the adapter %s", pod, r.cniAdapter)
	client := r.dialAdapter(ctx, r.cniAdapter)
	want := r.cniTargets()
	var got *adapterv1.ListTargetsResponse
	waitFor(ctx, r.t, "ListTargets from "+r.cniAdapter+" to name every CNI pod, reachable", func() error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		if got, err = client.ListTargets(cctx, &adapterv1.ListTargetsRequest{}); err != nil {
			return err
		}
		var names []string
		for _, tg := range got.GetTargets() {
			names = append(names, tg.GetName())
			if !tg.GetReachable() {
				return fmt.Errorf("target %s unreachable: %s", tg.GetName(), tg.GetError())
			}
		}
		if !slices.Equal(names, slices.Sorted(maps.Keys(want))) {
			return fmt.Errorf("targets %v, want %v", names, slices.Sorted(maps.Keys(want)))
		}
		return nil
	})
	for _, tg := range got.GetTargets() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := client.Status(cctx, &adapterv1.StatusRequest{Target: tg.GetName()})
		cancel()
		if err != nil {
			r.t.Fatalf("Status of target %s: %v", tg.GetName(), err)
		}
		self := st.GetSelf()
		r.t.Logf("CNI adapter target %s (%s): self %s %v, backend %s, %d peers",
			tg.GetName(), tg.GetSocket(), self.GetHostname(), self.GetTailscaleIps(), st.GetBackendState(), len(st.GetPeers()))
		if self.GetHostname() != want[tg.GetName()] || st.GetBackendState() != "Running" {
			r.t.Errorf("target %s: self %q in state %s, want the pod's node %q running", tg.GetName(), self.GetHostname(), st.GetBackendState(), want[tg.GetName()])
		}
	}
}

// checkCNIInGraph checks the CNI adapter's part of the WebUI's graph: it is
// online with a target per CNI pod, and each pod is a host it reaches.
func (r *operatorRun) checkCNIInGraph(g graph) error {
	i := slices.IndexFunc(g.Adapters, func(a graphAdapter) bool { return a.Name == r.cniAdapter })
	if i < 0 || !g.Adapters[i].Online {
		return fmt.Errorf("no online adapter %s: adapters %+v, errors %v", r.cniAdapter, g.Adapters, g.Errors)
	}
	want := r.cniTargets()
	if n := g.Adapters[i].Targets; n != len(want) {
		return fmt.Errorf("adapter %s has %d targets, want %d", r.cniAdapter, n, len(want))
	}
	for target, name := range want {
		ok := slices.ContainsFunc(g.Hosts, func(h graphHost) bool {
			return h.Adapter == r.cniAdapter && h.Target == target && h.Name == name && h.Error == ""
		})
		if !ok {
			return fmt.Errorf("no host %s (target %s) through %s: hosts %+v, errors %v", name, target, r.cniAdapter, g.Hosts, g.Errors)
		}
	}
	return nil
}

// scaleCNIPods scales the CNI's pods away before the release goes, through
// TestCNIChart's check that their nodes and host state go with them.
func (r *operatorRun) scaleCNIPods(ctx context.Context) { r.cni.scaleToZero() }

// uninstallCNI runs helm uninstall through TestCNIChart's checks, and then
// waits for the CNI adapter's node, which logs out and deletes itself on
// SIGTERM, to have left Headscale.
func (r *operatorRun) uninstallCNI(ctx context.Context) {
	r.cni.uninstall()
	waitFor(ctx, r.t, "the CNI adapter's node to leave Headscale", func() error {
		devs, err := r.cp.ListDevices(ctx, controlplane.ListOptions{Tag: contract.TagAdapter})
		if err != nil {
			return err
		}
		for _, d := range devs {
			if d.Hostname == r.cniAdapter {
				return fmt.Errorf("node %s (%s) still there", d.ID, d.Name)
			}
		}
		return nil
	})
	r.t.Logf("the CNI adapter %s left Headscale", r.cniAdapter)
}

// cniLogs is what saveLogs keeps of the CNI release: its daemon pods'
// containers, the adapter among them.
func (r *operatorRun) cniLogs() map[string][]string {
	if r.cni == nil {
		return nil
	}
	return map[string][]string{
		"cni": {"-n", r.cni.ns, "logs", "-l", "app.kubernetes.io/instance=" + cniRelease, "--all-containers", "--prefix", "--tail=-1"},
	}
}
