package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestChartArgs parses the arguments the Helm chart passes, as `helm
// template` renders them with the chart's defaults, and checks that every
// flag the chart's template names exists: the flags are GNU style, so a
// chart that spelled one -flag would fail at start.
func TestChartArgs(t *testing.T) {
	rendered := []string{
		"--namespace=tsymbiote-system",
		"--leader-elect=true",
		"--metrics-bind-address=:8080",
		"--health-probe-bind-address=:8081",
		"--webhook-port=9443",
		"--cert-dir=/tmp/k8s-webhook-server/serving-certs",
		"--cert-mode=self",
		"--cert-secret-name=t-tsymbiote-operator-webhook-cert",
		"--webhook-service-name=t-tsymbiote-operator-webhook",
		"--webhook-config-name=t-tsymbiote-operator",
		"--adapter-image=tsymbiote/adapter:0.1.0",
		"--adapter-image-pull-policy=IfNotPresent",
		"--adapter-allowed-tag=tag:debuggers",
		"--adapter-requests=cpu=10m,memory=32Mi",
		"--adapter-limits=memory=128Mi",
		"--adapter-env=TS_DEBUG_USE_DERP_HTTP=1",
		"--adapter-env=TS_EXAMPLE=a=b,c",
		"--key-expiry=1h",
		"--enable-tsymbiote-controller=false",
		"--zap-log-level=info",
		"--zap-encoder=json",
	}
	cmd, o := newCommand(func(string) string { return "" })
	if err := cmd.ParseFlags(rendered); err != nil {
		t.Fatalf("chart arguments do not parse: %v", err)
	}
	if err := o.complete(); err != nil {
		t.Fatalf("chart arguments are refused: %v", err)
	}
	if !o.leaderElect || o.enableTSymbiote || o.keyExpiry != time.Hour || o.webhookPort != 9443 ||
		o.adapter.AllowedTag != "tag:debuggers" || o.leaderElectionNS != "tsymbiote-system" ||
		len(o.adapter.Env) != 2 || o.adapter.Env[1].Value != "a=b,c" {
		t.Errorf("parsed options %+v", o)
	}

	tmpl, err := os.ReadFile(filepath.Join("..", "..", "..", "charts", "tsymbiote-operator", "templates", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	flags := regexp.MustCompile(`(?m)^\s*- "?(-+)([a-z0-9-]+)=`).FindAllStringSubmatch(string(tmpl), -1)
	if len(flags) < 10 {
		t.Fatalf("found only %d flags in the chart's deployment", len(flags))
	}
	for _, m := range flags {
		if m[1] != "--" {
			t.Errorf("chart passes %s%s: flags are spelled --%s", m[1], m[2], m[2])
		}
		if cmd.Flags().Lookup(m[2]) == nil {
			t.Errorf("chart passes --%s, which the operator does not have", m[2])
		}
	}
}

// TestHelp shows that --help prints every flag with its default and
// succeeds without starting anything.
func TestHelp(t *testing.T) {
	cmd, _ := newCommand(func(k string) string { return map[string]string{"POD_NAMESPACE": "from-env"}[k] })
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`--metrics-bind-address string`, `(default ":8080")`,
		`--namespace string`, `(default "from-env")`,
		`--key-expiry duration`, `(default 1h0m0s)`,
		`--enable-tsymbiote-controller`, `(default true)`,
		`--kubeconfig string`, `--zap-log-level`, `--cert-mode string`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}
