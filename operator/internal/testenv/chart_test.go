package testenv_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"tsymbiote.dhouti.dev/operator/internal/testenv"
)

// TestChart lints the Helm chart and applies what `helm template` renders,
// CRD included, with server-side dry run to the real API server, for the
// default values and for values that exercise the optional parts.
func TestChart(t *testing.T) {
	chart := testenv.ChartDir(t)
	t.Log(strings.TrimSpace(testenv.Helm(t, "lint", "--strict", chart)))
	t.Log(strings.TrimSpace(testenv.Helm(t, "lint", "--strict", chart, "--set", "webhook.certManager.enabled=true")))

	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	const ns = "tsymbiote-system"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"secret, Fail policy, 2 replicas, no TSymbiote controller", []string{
			"--set", "controlPlane.secretValues.HEADSCALE_URL=https://headscale.test",
			"--set", "controlPlane.secretValues.HEADSCALE_API_KEY=not-a-real-key",
			"--set", "webhook.failurePolicy=Fail",
			"--set", "replicaCount=2",
			"--set", "tsymbioteController=false",
			"--set", "adapter.allowedTag=tag:debuggers",
			"--set", "adapter.env.TS_DEBUG_USE_DERP_HTTP=1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := testenv.Helm(t, append([]string{"template", "tsymbiote-operator", chart, "-n", ns, "--include-crds"}, tc.args...)...)
			objs := decodeAll(t, out)
			kinds := map[string]int{}
			for _, u := range objs {
				if u.GetNamespace() == "" && u.GetKind() != "ClusterRole" && u.GetKind() != "ClusterRoleBinding" &&
					u.GetKind() != "CustomResourceDefinition" && u.GetKind() != "MutatingWebhookConfiguration" {
					u.SetNamespace(ns)
				}
				err := env.Client.Patch(ctx, u, client.Apply, client.DryRunAll, client.ForceOwnership, client.FieldOwner("helm-dry-run"))
				if err != nil {
					t.Errorf("server-side dry run of %s %s refused: %v", u.GetKind(), u.GetName(), err)
					continue
				}
				kinds[u.GetKind()]++
			}
			t.Logf("accepted %d objects: %v", len(objs), kinds)
			for _, k := range []string{"CustomResourceDefinition", "Deployment", "MutatingWebhookConfiguration", "ClusterRole", "Service"} {
				if kinds[k] == 0 {
					t.Errorf("no %s rendered", k)
				}
			}
		})
	}
}

func decodeAll(t *testing.T, s string) []*unstructured.Unstructured {
	t.Helper()
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(s), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := d.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("decoding helm output: %v", err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}
