package main

import (
	"slices"
	"strings"
	"testing"
)

// TestExposeFlagErrors shows that bad exposure flags fail at start, naming
// the flag to fix.
func TestExposeFlagErrors(t *testing.T) {
	base := []string{"--namespace=ns", "--adapter-image=img", "--enable-service-controller"}
	hs := map[string]string{"HEADSCALE_URL": "http://127.0.0.1:1", "HEADSCALE_API_KEY": "k"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{base, "--proxy-image"},
		{[]string{"--namespace=ns", "--adapter-image=img", "--enable-ingress-controller"}, "--proxy-image"},
		{append(base, "--proxy-image=p", "--proxy-image-pull-policy=Sometimes"), "--proxy-image-pull-policy"},
		{append(base, "--proxy-image=p", "--proxy-requests=cpu"), "--proxy-requests"},
		{append(base, "--proxy-image=p", "--proxy-limits=gpu=1"), "--proxy-limits"},
		{append(base, "--proxy-image=p", "--proxy-env=NOVALUE"), "--proxy-env"},
		{append(base, "--proxy-image=p", "--proxy-default-tags=k8s"), "--proxy-default-tags"},
		{append(base, "--proxy-image=p", "--proxy-default-tags="), "--proxy-default-tags"},
		{append(base, "--proxy-image=p", "--proxy-key-expiry=30s"), "--proxy-key-expiry"},
	} {
		err := run(tc.args, func(k string) string { return hs[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}

// TestExposeFlagsConfig checks what good flags become.
func TestExposeFlagsConfig(t *testing.T) {
	cmd, o := newCommand(func(string) string { return "" })
	if err := cmd.ParseFlags([]string{"--enable-service-controller", "--enable-subnet-router-controller", "--proxy-image=p:1",
		"--proxy-default-tags=tag:k8s, tag:prod", "--proxy-env=TS_DEBUG_USE_DERP_HTTP=1", "--proxy-limits=memory=64Mi"}); err != nil {
		t.Fatal(err)
	}
	if err := o.expose.complete("ops"); err != nil {
		t.Fatal(err)
	}
	c := o.expose.config()
	if !c.Services || c.Ingresses || !c.SubnetRouters || c.Proxy.Image != "p:1" || c.Proxy.Namespace != "ops" {
		t.Errorf("config %+v", c)
	}
	if !slices.Equal(c.Proxy.DefaultTags, []string{"tag:k8s", "tag:prod"}) || len(c.Proxy.Env) != 1 || c.Proxy.Resources.Limits.Memory().String() != "64Mi" {
		t.Errorf("proxy options %+v", c.Proxy)
	}
	// With every controller off, nothing is required.
	_, off := newCommand(func(string) string { return "" })
	if err := off.expose.complete("ops"); err != nil || off.expose.config().Services {
		t.Errorf("all off: %v, %+v", err, off.expose.config())
	}
}
