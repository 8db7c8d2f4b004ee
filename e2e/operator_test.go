package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"tailscale.com/tsnet"

	"tsymbiote.dhouti.dev/controlplane"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/proto/contract"
	"tsymbiote.dhouti.dev/testkit"
	"tsymbiote.dhouti.dev/testkit/cluster"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// Names the operator test gives what it makes. Every one of them is
// removed at the end, pass or fail (operatorRun.cleanup).
const (
	opNamespace    = "tsymbiote-e2e-operator" // the chart's release namespace
	opRelease      = "tsymbiote-operator"     // so that the chart's full name is just this
	appNamespace   = "tsymbiote-e2e-app"      // labelled for injection
	webuiNamespace = "tsymbiote-e2e-webui"    // the TSymbiote and its auth Secret
	appPod         = "app"                    // runs the stock tailscaled
	appHostname    = "app-tailscaled"         // that tailscaled's tailnet hostname
	webuiName      = "webui"                  // the TSymbiote, its StatefulSet and hostname
	webuiAuth      = "webui-auth"             // the TSymbiote's auth Secret
	crdName        = "tsymbiotes.tsymbiote.dhouti.dev"
	// The stock tailscaled the app pod runs (hack/images, the pinned version).
	tailscaleImage = "tsymbiote/tailscale:v1.102.5"
	webuiImage     = "tsymbiote/webui:0.1.0" // the chart's appVersion
)

// The test's own tailnet nodes: one that calls the adapter as the WebUI
// would, and one that stands in for the person at the browser.
const (
	callerHostname  = "e2e-adapter-caller" // tag:tsymbiote-webui
	browserHostname = "e2e-browser"        // tag:test, which the WebUI allows
)

// TestOperatorChart installs the operator chart on the node and follows a
// pod and a TSymbiote through their lives: the webhook injects the adapter
// next to a stock tailscaled, the adapter joins the tailnet with the key the
// secrets controller minted and answers Status over it, and deleting the pod
// removes its adapter node and Secret. Beside it the tailscale-cni chart runs
// with its own adapter over the pods' sockets and two pods on it: the WebUI
// the TSymbiote deploys finds both adapters, the CNI one with a target per
// pod, and pings through all of them in Chromium. The CNI chart goes after
// the WebUI and the app pod exist, so that only its own pods are on it.
func TestOperatorChart(t *testing.T) {
	c := node(t)
	r := &operatorRun{t: t, c: c, start: time.Now()}
	r.cp = r.controlPlane()
	r.out = artifactDir(t)
	// Registered first, so that it runs last: after the tailnet nodes of
	// the test have logged out.
	t.Cleanup(r.cleanup)

	r.step("helm install", r.installChart)
	r.step("webhook serving", r.waitWebhook)
	r.step("app pod ready", r.startAppPod)
	r.step("adapter Status over the tailnet", r.callAdapter)
	r.step("adapter follows a restart", r.restartTailscaled)
	r.step("TSymbiote ready", r.deployWebUI)
	r.step("tailscale-cni install with adapter", r.installCNI)
	r.step(fmt.Sprintf("%d CNI pods with ts0", opCNIPods), r.deployCNIPods)
	r.step("CNI adapter serves each pod", r.callCNIAdapter)
	r.step("WebUI discovers both adapters", r.waitDiscovery)
	r.step("browser pings all", r.browse)
	r.step("pod deletion cleans up", r.deleteAppPod)
	r.step("TSymbiote deletion cleans up", r.deleteWebUI)
	r.step("CNI pods scaled to 0", r.scaleCNIPods)
	r.step("tailscale-cni uninstall", r.uninstallCNI)
}

// operatorRun is one run of TestOperatorChart and what it made.
type operatorRun struct {
	t     *testing.T
	c     *cluster.Cluster
	cp    controlplane.Client
	start time.Time
	out   string // bin/test-artifacts/<test>: screenshot, export, logs

	caller  *tsnet.Server // tag:tsymbiote-webui
	client  adapterv1.AdapterServiceClient
	browser *tsnet.Server // tag:test
	webURL  string        // the local proxy to the WebUI
	adapter string        // the sidecar's tailnet hostname

	cni        *cniTest // the tailscale-cni release and its pods
	cniAdapter string   // its adapter's tailnet hostname
}

// step runs one phase and logs its wall time, also when it fails.
func (r *operatorRun) step(name string, f func(ctx context.Context)) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	defer func() {
		verdict := "done"
		if r.t.Failed() {
			verdict = "FAILED"
		}
		r.t.Logf("step %-32s %s in %5.1fs (%5.1fs since start)", name, verdict, time.Since(start).Seconds(), time.Since(r.start).Seconds())
	}()
	f(ctx)
}

func (r *operatorRun) kubectl(ctx context.Context, args ...string) string {
	r.t.Helper()
	out, err := r.c.Kubectl(ctx, args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *operatorRun) apply(ctx context.Context, yaml string) {
	r.t.Helper()
	if _, err := r.c.KubectlIn(ctx, strings.NewReader(yaml), "apply", "-f", "-"); err != nil {
		r.t.Fatal(err)
	}
}

// controlPlane is a client of the node's Headscale, as the daemons build
// theirs, for checking and cleaning up its nodes.
func (r *operatorRun) controlPlane() controlplane.Client {
	cp, err := controlPlaneOf(r.c, r.t.Logf)
	if err != nil {
		r.t.Fatal(err)
	}
	return cp
}

// installChart installs the chart with the node's Headscale as the control
// plane and the default images, and waits for the operator to be Ready.
// The credentials go in a values file, not on the command line, which
// errors would print.
func (r *operatorRun) installChart(ctx context.Context) {
	values := filepath.Join(r.t.TempDir(), "values.yaml")
	// The node's Headscale serves its DERP over plain HTTP, which the
	// sidecar's tailscale must be told.
	v := fmt.Sprintf("controlPlane:\n  secretValues:\n    HEADSCALE_URL: %q\n    HEADSCALE_API_KEY: %q\n"+
		"adapter:\n  env:\n    TS_DEBUG_USE_DERP_HTTP: \"1\"\n", r.c.Headscale.URL, r.c.Headscale.APIKey)
	if err := os.WriteFile(values, []byte(v), 0o600); err != nil {
		r.t.Fatal(err)
	}
	root, err := testkit.RepoRoot()
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.Helm(ctx, "install", opRelease, filepath.Join(root, "charts", "tsymbiote-operator"),
		"--namespace", opNamespace, "--create-namespace", "-f", values, "--wait", "--timeout", "3m"); err != nil {
		r.t.Fatal(err)
	}
	r.kubectl(ctx, "-n", opNamespace, "wait", "--for=condition=Available", "deployment/"+opRelease, "--timeout=60s")
}

// waitWebhook waits until the webhook configuration carries the operator's
// CA and the API server's dry run of a labelled pod comes back with the
// sidecar: the webhook is registered, reachable through its Service and
// serving.
func (r *operatorRun) waitWebhook(ctx context.Context) {
	r.apply(ctx, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels: {%s: %s}
`, appNamespace, contract.LabelSecretInjection, contract.InjectionEnabled))
	waitFor(ctx, r.t, "the webhook's caBundle", func() error {
		out, err := r.c.Kubectl(ctx, "get", "mutatingwebhookconfiguration", opRelease, "-o", "jsonpath={.webhooks[0].clientConfig.caBundle}")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) == "" {
			return fmt.Errorf("empty caBundle")
		}
		return nil
	})
	probe := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: webhook-probe
  namespace: %s
  labels: {%s: %s}
spec:
  containers: [{name: c, image: %s}]
`, appNamespace, contract.LabelSecretInjection, contract.InjectionEnabled, tailscaleImage)
	waitFor(ctx, r.t, "the webhook to inject a dry-run pod", func() error {
		out, err := r.c.KubectlIn(ctx, strings.NewReader(probe), "create", "--dry-run=server", "-f", "-", "-o", "jsonpath={.spec.containers[*].name}")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "tsymbiote-adapter") {
			return fmt.Errorf("containers %q", out)
		}
		return nil
	})
}

// startAppPod runs the stock tailscaled in a labelled pod, logged in to
// the node's Headscale through its config file, and waits for the pod, with
// the injected sidecar, to be Ready.
func (r *operatorRun) startAppPod(ctx context.Context) {
	key, err := r.c.Headscale.AuthKey(ctx, headscaletest.KeyOptions{Tags: []string{headscaletest.TagTest}, Ephemeral: true})
	if err != nil {
		r.t.Fatal(err)
	}
	conf, err := json.Marshal(map[string]any{
		"Version": "alpha0", "ServerURL": r.c.Headscale.URL, "AuthKey": key, "Hostname": appHostname,
		// Unlocked, so that the tailnet's defaults apply without a
		// complaint in the log for each.
		"Locked": false,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.apply(ctx, appPodYAML(string(conf)))
	r.kubectl(ctx, "-n", appNamespace, "wait", "--for=condition=Ready", "pod/"+appPod, "--timeout=240s")
	names := r.kubectl(ctx, "-n", appNamespace, "get", "pod", appPod, "-o", "jsonpath={.spec.containers[*].name}")
	if !slices.Contains(strings.Fields(names), "tsymbiote-adapter") {
		r.t.Fatalf("app pod has containers %q: no adapter sidecar", names)
	}
	if shared := r.kubectl(ctx, "-n", appNamespace, "get", "pod", appPod, "-o", "jsonpath={.spec.shareProcessNamespace}"); shared != "true" {
		r.t.Errorf("app pod shareProcessNamespace %q, want true", shared)
	}
	r.adapter = strings.TrimSpace(r.kubectl(ctx, "-n", appNamespace, "get", "pod", appPod, "-o", `jsonpath={.metadata.annotations.tsymbiote\.dhouti\.dev/adapter-hostname}`))
	secret := strings.TrimSpace(r.kubectl(ctx, "-n", appNamespace, "get", "pod", appPod, "-o", `jsonpath={.metadata.annotations.tsymbiote\.dhouti\.dev/adapter-secret}`))
	r.kubectl(ctx, "-n", appNamespace, "get", "secret", secret)
	r.t.Logf("app pod runs tailscaled %s and the adapter %s (key in Secret %s)", appHostname, r.adapter, secret)
}

// appPodYAML is the app pod and the Secret with its tailscaled's config.
// The pod is hardened as many are, with runAsNonRoot for all its
// containers: tailscaled runs as a user of its own in userspace networking
// (no TUN, no capabilities), with its socket in /tmp and its state in a
// directory of its own on an emptyDir (which it must own to chmod), so
// that a restarted container is the same node. DERP over plain HTTP is
// what the node's Headscale serves.
func appPodYAML(conf string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: %[1]s-tailscaled, namespace: %[2]s}
stringData:
  config.json: '%[3]s'
---
apiVersion: v1
kind: Pod
metadata:
  name: %[1]s
  namespace: %[2]s
  labels: {%[4]s: %[5]s}
spec:
  terminationGracePeriodSeconds: 5
  securityContext: {runAsNonRoot: true}
  containers:
    - name: tailscaled
      image: %[6]s
      args: [--tun=userspace-networking, --statedir=/var/lib/tailscale/state, --socket=/tmp/tailscaled.sock, --config=/etc/tailscaled/config.json]
      securityContext: {runAsUser: 1000, runAsGroup: 1000, allowPrivilegeEscalation: false}
      env:
        - {name: TS_DEBUG_USE_DERP_HTTP, value: "1"}
        - {name: TS_NO_LOGS_NO_SUPPORT, value: "true"}
        - {name: TS_DISABLE_PORTMAPPER, value: "1"}
      volumeMounts:
        - {name: config, mountPath: /etc/tailscaled, readOnly: true}
        - {name: state, mountPath: /var/lib/tailscale}
  volumes:
    - name: config
      secret: {secretName: %[1]s-tailscaled}
    - name: state
      emptyDir: {}
`, appPod, appNamespace, conf, contract.LabelSecretInjection, contract.InjectionEnabled, tailscaleImage)
}

// callAdapter calls Status on the sidecar over the tailnet, as the WebUI
// does: from a node tagged tag:tsymbiote-webui.
func (r *operatorRun) callAdapter(ctx context.Context) {
	r.caller = r.tsnetNode(callerHostname, headscaletest.TagWebUI)
	r.client = r.dialAdapter(ctx, r.adapter)
	r.checkStatus(ctx)
}

// dialAdapter waits for the adapter named host to be the caller's peer
// and returns a client that reaches it from the caller over the tailnet.
func (r *operatorRun) dialAdapter(ctx context.Context, host string) adapterv1.AdapterServiceClient {
	peer, err := headscaletest.WaitForPeer(ctx, r.caller, host)
	if err != nil {
		r.t.Fatal(err)
	}
	addr := fmt.Sprintf("%s:%d", peer.TailscaleIPs[0], contract.Port)
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return r.caller.Dial(ctx, "tcp", addr)
		}))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { conn.Close() })
	return adapterv1.NewAdapterServiceClient(conn)
}

// checkStatus waits for the adapter to answer Status for the pod's
// tailscaled, running.
func (r *operatorRun) checkStatus(ctx context.Context) {
	var st *adapterv1.StatusResponse
	waitFor(ctx, r.t, "Status from the adapter "+r.adapter, func() error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		st, err = r.client.Status(cctx, &adapterv1.StatusRequest{})
		if err == nil && st.GetBackendState() != "Running" {
			err = fmt.Errorf("backend state %s", st.GetBackendState())
		}
		return err
	})
	self := st.GetSelf()
	r.t.Logf("adapter %s answers Status: self %s (%s), backend %s, %d peers", r.adapter, self.GetHostname(), self.GetDnsName(), st.GetBackendState(), len(st.GetPeers()))
	if self.GetHostname() != appHostname {
		r.t.Errorf("Status self hostname %q, want the pod's tailscaled %q", self.GetHostname(), appHostname)
	}
}

// restartTailscaled kills the pod's tailscaled, as a crash would; the
// kubelet restarts it under a new PID, and the sidecar, which found its
// socket through /proc/<pid>/root, must find it again.
func (r *operatorRun) restartTailscaled(ctx context.Context) {
	status := func(field string) string {
		return strings.TrimSpace(r.kubectl(ctx, "-n", appNamespace, "get", "pod", appPod, "-o",
			`jsonpath={.status.containerStatuses[?(@.name=="tailscaled")].`+field+`}`))
	}
	id := strings.TrimPrefix(status("containerID"), "containerd://")
	if _, err := r.c.Ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", id); err != nil {
		r.t.Fatal(err)
	}
	waitFor(ctx, r.t, "tailscaled to be restarted", func() error {
		if n := status("restartCount"); n == "0" || n == "" {
			return fmt.Errorf("restart count %q", n)
		}
		if ready := status("ready"); ready != "true" {
			return fmt.Errorf("ready %q", ready)
		}
		return nil
	})
	r.checkStatus(ctx)
	logs := r.kubectl(ctx, "-n", appNamespace, "logs", appPod, "-c", "tsymbiote-adapter")
	for _, want := range []string{"discover-socket: using /proc/", "/root/tmp/tailscaled.sock is gone; using /proc/"} {
		if !strings.Contains(logs, want) {
			r.t.Errorf("sidecar log lacks %q:\n%s", want, logs)
		}
	}
}

// tsnetNode joins a node of the test to the node's Headscale, and logs it
// out (which deletes it, ephemeral) before it closes, so that the next
// test's tailnet does not list it.
func (r *operatorRun) tsnetNode(hostname, tag string) *tsnet.Server {
	ts, _ := r.c.Headscale.NewNode(r.t, headscaletest.NodeOptions{Hostname: hostname, Tags: []string{tag}, Ephemeral: true})
	r.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if lc, err := ts.LocalClient(); err == nil {
			if err := lc.Logout(ctx); err != nil {
				r.t.Logf("logging %s out: %v", hostname, err)
			}
		}
	})
	return ts
}

// browse runs the WebUI's browser check (frontend/e2e/run.mjs, the one
// TestBrowser runs) against the WebUI through the local proxy, and keeps
// its screenshot and export in bin/test-artifacts/TestOperatorChart.
func (r *operatorRun) browse(ctx context.Context) {
	root, err := testkit.RepoRoot()
	if err != nil {
		r.t.Fatal(err)
	}
	frontend := filepath.Join(root, "webui", "frontend")
	chromium := "/usr/bin/chromium"
	for _, need := range []string{chromium, filepath.Join(frontend, "node_modules", "playwright-core"), filepath.Join(frontend, "e2e", "run.mjs")} {
		if _, err := os.Stat(need); err != nil {
			testkit.Missing(r.t, "browser check needs %s (hack/apt.sh chromium; npm ci in webui/frontend)", need)
		}
	}
	out := r.out
	cmd := exec.CommandContext(ctx, "node", "e2e/run.mjs")
	cmd.Dir = frontend
	// Chromium's and Playwright's temporary files go with the test's.
	expect := append([]string{appHostname, r.adapter, r.cniAdapter}, r.cniNodes()...)
	cmd.Env = append(os.Environ(), "TMPDIR="+r.t.TempDir(), "WEBUI_URL="+r.webURL, "CHROMIUM="+chromium, "OUT_DIR="+out,
		"EXPECT_NODES="+strings.Join(expect, ","), "HOST_NODE="+appHostname)
	b, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		r.t.Log(line)
	}
	if err != nil {
		r.t.Fatalf("browser check: %v", err)
	}
	r.checkExport(out)
	r.t.Logf("screenshot: %s", filepath.Join(out, "webui.png"))
}

// checkExport reads the ping results the browser exported: every ping from
// the pod's tailscaled got an answer.
func (r *operatorRun) checkExport(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) == 0 {
		r.t.Fatalf("no export in %s", dir)
	}
	b, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		r.t.Fatal(err)
	}
	var doc struct {
		Results []struct {
			HostName, PeerName, Adapter, Path, Error string
			OK                                       bool
			LatencyMS                                float64 `json:"latencyMs"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		r.t.Fatalf("export %s: %v", files[len(files)-1], err)
	}
	perHost, perAdapter := map[string]int{}, map[string]int{}
	for _, res := range doc.Results {
		r.t.Logf("ping %s -> %s: ok=%v path=%s %.1fms %s", res.HostName, res.PeerName, res.OK, res.Path, res.LatencyMS, res.Error)
		if !res.OK {
			r.t.Errorf("ping %s -> %s failed: %s", res.HostName, res.PeerName, res.Error)
		}
		perHost[res.HostName]++
		perAdapter[res.Adapter]++
	}
	// Every host pinged through: the sidecar's and each CNI pod through
	// the CNI node's adapter.
	for _, h := range append([]string{appHostname}, r.cniNodes()...) {
		if perHost[h] == 0 {
			r.t.Errorf("no ping from host %s in the export (pings per host: %v)", h, perHost)
		}
	}
	r.t.Logf("export: %d pings; per host %v; per adapter %v", len(doc.Results), perHost, perAdapter)
}

// deleteAppPod deletes the pod and waits for the operator to have deleted
// its adapter node from Headscale and for its Secret to be gone.
func (r *operatorRun) deleteAppPod(ctx context.Context) {
	// The pod's logs go with its life.
	r.saveLogs(ctx, "")
	secret := strings.TrimSpace(r.kubectl(ctx, "-n", appNamespace, "get", "pod", appPod, "-o", `jsonpath={.metadata.annotations.tsymbiote\.dhouti\.dev/adapter-secret}`))
	r.kubectl(ctx, "-n", appNamespace, "delete", "pod", appPod, "--wait=true", "--timeout=120s")
	waitFor(ctx, r.t, "the adapter node to leave Headscale", func() error {
		devs, err := r.cp.ListDevices(ctx, controlplane.ListOptions{Tag: contract.TagAdapter})
		if err != nil {
			return err
		}
		for _, d := range devs {
			if d.Hostname == r.adapter {
				return fmt.Errorf("node %s (%s) still there", d.ID, d.Name)
			}
		}
		return nil
	})
	waitFor(ctx, r.t, "Secret "+secret+" to be deleted", func() error {
		out, err := r.c.Kubectl(ctx, "-n", appNamespace, "get", "secret", secret, "--ignore-not-found", "-o", "name")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("%s still there", out)
		}
		return nil
	})
}
