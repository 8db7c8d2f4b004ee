package main

import (
	"strings"
	"testing"
	"time"
)

func TestAccessFlags(t *testing.T) {
	tests := []struct {
		args    []string
		trusted string
		err     string
	}{
		{args: nil},
		{args: []string{"--enable-access-controller"}},
		{args: []string{"--enable-access-controller", "--webui-service-account=webui"}, trusted: "system:serviceaccount:tsymbiote:webui"},
		{args: []string{"--enable-access-controller", "--webui-service-account=other/webui"}, trusted: "system:serviceaccount:other:webui"},
		{args: []string{"--enable-access-controller", "--webui-service-account=a/b/c"}, err: `--webui-service-account "a/b/c"`},
		{args: []string{"--enable-access-controller", "--access-max-duration=30s"}, err: "--access-max-duration 30s is too short"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd, o := newCommand(func(string) string { return "" })
			if err := cmd.Flags().Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := o.access.complete("tsymbiote")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("complete = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg := o.access.config()
			if cfg.TrustedAsserter != tt.trusted || cfg.MaxDuration != 24*time.Hour && len(tt.args) < 3 {
				t.Errorf("config = %+v, want trusted %q", cfg, tt.trusted)
			}
		})
	}
}
