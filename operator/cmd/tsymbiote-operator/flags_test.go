package main

import (
	"strings"
	"testing"
)

// TestFlagErrors shows that bad flags and environment fail before anything
// is contacted, with an error naming what to fix.
func TestFlagErrors(t *testing.T) {
	base := []string{"--namespace=ns", "--adapter-image=img"}
	hs := map[string]string{"HEADSCALE_URL": "http://127.0.0.1:1", "HEADSCALE_API_KEY": "k"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--namespace=ns"}, hs, "--adapter-image"},
		{append(base, "--adapter-image-pull-policy=Sometimes"), hs, "--adapter-image-pull-policy"},
		{append(base, "--adapter-allowed-tag=webui"), hs, "--adapter-allowed-tag"},
		{append(base, "--adapter-requests=cpu"), hs, "--adapter-requests"},
		{append(base, "--adapter-limits=gpu=1"), hs, "--adapter-limits"},
		{append(base, "--adapter-env=NOVALUE"), hs, "--adapter-env"},
		{append(base, "--adapter-env=1BAD=x"), hs, "--adapter-env"},
		{append(base, "--adapter-env=A=1", "--adapter-env=A=2"), hs, "--adapter-env"},
		{append(base, "--adapter-env=TS_AUTHKEY=x"), hs, "--adapter-env"},
		{append(base, "--key-expiry=1m"), hs, "--key-expiry"},
		{append(base, "--cert-mode=magic"), hs, "--cert-mode"},
		{[]string{"--adapter-image=img"}, hs, "POD_NAMESPACE"},
		{append(base, "stray"), hs, "unexpected arguments"},
		{base, nil, "HEADSCALE_URL"},
		{base, map[string]string{"HEADSCALE_URL": "not a url", "HEADSCALE_API_KEY": "k"}, "HEADSCALE_URL must be"},
	} {
		err := run(tc.args, func(k string) string { return tc.env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}
