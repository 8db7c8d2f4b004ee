package controlplane_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/testkit/headscaletest"
)

// TestHeadscaletestEnv checks that the test Headscale's environment is the
// one ConfigFromEnv reads: tests and the demo configure every daemon with it.
func TestHeadscaletestEnv(t *testing.T) {
	hs := &headscaletest.Server{URL: "http://127.0.0.1:1", APIKey: "hskey-api-test"}
	env := map[string]string{}
	for _, kv := range hs.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	cfg, err := controlplane.ConfigFromEnv(hs.Getenv)
	if err != nil || cfg.HeadscaleURL != hs.URL || cfg.HeadscaleAPIKey.Reveal() != hs.APIKey {
		t.Fatalf("ConfigFromEnv(Getenv) = %+v, %v", cfg, err)
	}
	if env[controlplane.EnvHeadscaleURL] != hs.URL || env[controlplane.EnvHeadscaleAPIKey] != hs.APIKey {
		t.Errorf("Env() = %v, not the variables controlplane reads", hs.Env())
	}
}

// TestHeadscaleDevicesAndKeys runs the device and key half of the interface
// against a real Headscale: a tagged ephemeral key minted through it lets a
// tsnet node join, listing by tag shows the node, and deleting removes it.
func TestHeadscaleDevicesAndKeys(t *testing.T) {
	hs := headscaletest.Start(t, headscaletest.Options{Logf: t.Logf})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newClient(t, hs.Getenv)

	if err := c.Verify(ctx); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	key, err := c.CreateAuthKey(ctx, controlplane.AuthKeyRequest{
		Tags:          []string{headscaletest.TagAdapter},
		Ephemeral:     true,
		Preauthorized: true,
		Expiry:        5 * time.Minute,
	})
	if err != nil {
		t.Fatalf("CreateAuthKey: %v", err)
	}
	if key.Key.IsZero() || !slices.Equal(key.Tags, []string{headscaletest.TagAdapter}) {
		t.Fatalf("key: got tags %v, empty key %v", key.Tags, key.Key.IsZero())
	}
	if until := time.Until(key.Expires); until < 4*time.Minute || until > 6*time.Minute {
		t.Errorf("key expires in %v, want about 5m", until)
	}

	_, st := hs.NewNode(t, headscaletest.NodeOptions{Hostname: "cp-test-node", AuthKey: key.Key.Reveal(), Ephemeral: true})
	selfIPs := st.Self.TailscaleIPs
	t.Logf("node joined as %s with %v", st.Self.ID, selfIPs)

	devs, err := c.ListDevices(ctx, controlplane.ListOptions{Tag: headscaletest.TagAdapter})
	if err != nil {
		t.Fatalf("ListDevices: %v", err)
	}
	if len(devs) != 1 {
		t.Fatalf("ListDevices(tag:tsymbiote-adapter) = %d devices, want 1: %+v", len(devs), devs)
	}
	d := devs[0]
	t.Logf("listed: id=%s name=%s tags=%v addrs=%v online=%v ephemeral=%v", d.ID, d.Name, d.Tags, d.Addresses, d.Online, d.Ephemeral)
	if d.ID != string(st.Self.ID) {
		t.Errorf("device ID %q, want the node's stable ID %q", d.ID, st.Self.ID)
	}
	if d.Hostname != "cp-test-node" || !d.HasTag(headscaletest.TagAdapter) || !d.Ephemeral {
		t.Errorf("device = %+v", d)
	}
	if !slices.Equal(d.Addresses, selfIPs) {
		t.Errorf("device addresses %v, want the node's %v", d.Addresses, selfIPs)
	}
	if other, err := c.ListDevices(ctx, controlplane.ListOptions{Tag: headscaletest.TagWebUI}); err != nil || len(other) != 0 {
		t.Errorf("ListDevices(tag:tsymbiote-webui) = %v, %v; want none", other, err)
	}

	if err := c.DeleteDevice(ctx, d.ID); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	devs, err = c.ListDevices(ctx, controlplane.ListOptions{})
	if err != nil || len(devs) != 0 {
		t.Fatalf("after delete: %v, %v; want no devices", devs, err)
	}
	if err := c.DeleteDevice(ctx, d.ID); !errors.Is(err, controlplane.ErrNotFound) {
		t.Errorf("second DeleteDevice = %v, want ErrNotFound", err)
	}
	if _, err := c.CreateAuthKey(ctx, controlplane.AuthKeyRequest{Tags: []string{"k8s-pod"}}); err == nil || !strings.Contains(err.Error(), `"k8s-pod"`) {
		t.Errorf("CreateAuthKey with a malformed tag = %v, want an error naming it", err)
	}
}

// TestHeadscalePolicyCAS shows policy get/set round-trips and that a set with
// a stale version token is refused and changes nothing.
func TestHeadscalePolicyCAS(t *testing.T) {
	hs := headscaletest.Start(t, headscaletest.Options{Policy: headscaletest.SeedPolicy})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newClient(t, hs.Getenv)

	p1, err := c.GetPolicy(ctx)
	if err != nil {
		t.Fatalf("GetPolicy: %v", err)
	}
	if !strings.Contains(p1.Body, "tcp:3621") || p1.Version == "" {
		t.Fatalf("GetPolicy = %+v, want the seed policy with a version", p1)
	}
	updated := strings.Replace(headscaletest.SeedPolicy, `"tag:test":              ["tsymbiote@"],`, `"tag:test": ["tsymbiote@"], "tag:extra": ["tsymbiote@"],`, 1)
	p2, err := c.SetPolicy(ctx, updated, p1.Version)
	if err != nil {
		t.Fatalf("SetPolicy with current version: %v", err)
	}
	if p2.Version == p1.Version || !strings.Contains(p2.Body, "tag:extra") {
		t.Fatalf("SetPolicy = %+v, want the new policy with a new version", p2)
	}
	got, err := c.GetPolicy(ctx)
	if err != nil || got.Body != p2.Body || got.Version != p2.Version {
		t.Fatalf("GetPolicy after set = %+v, %v; want %+v", got, err, p2)
	}

	// p1.Version is now stale.
	_, err = c.SetPolicy(ctx, headscaletest.OpenPolicy, p1.Version)
	if !errors.Is(err, controlplane.ErrPolicyConflict) {
		t.Fatalf("SetPolicy with stale version = %v, want ErrPolicyConflict", err)
	}
	after, err := c.GetPolicy(ctx)
	if err != nil || after.Body != p2.Body {
		t.Fatalf("stale SetPolicy changed the policy: %+v, %v", after, err)
	}
	if _, err := c.SetPolicy(ctx, `{"acls": [`, p2.Version); err == nil {
		t.Errorf("SetPolicy with malformed HuJSON succeeded")
	}
}
