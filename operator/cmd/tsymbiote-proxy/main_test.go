package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestConfigFromEnv(t *testing.T) {
	good := map[string]string{
		"TSYMBIOTE_PROXY_CONFIG_SECRET": "web-proxy-config",
		"TSYMBIOTE_PROXY_STATE_SECRET":  "web-proxy-state",
		"POD_NAMESPACE":                 "tsymbiote",
		"TS_AUTHKEY":                    "tskey-auth-secret",
		"TS_CONTROL_URL":                "http://headscale.tsymbiote:8080",
	}
	tests := []struct {
		name    string
		edit    map[string]string
		wantErr string
	}{
		{name: "good"},
		{name: "no config secret", edit: map[string]string{"TSYMBIOTE_PROXY_CONFIG_SECRET": ""}, wantErr: "TSYMBIOTE_PROXY_CONFIG_SECRET is not set"},
		{name: "no state secret", edit: map[string]string{"TSYMBIOTE_PROXY_STATE_SECRET": " "}, wantErr: "TSYMBIOTE_PROXY_STATE_SECRET is not set"},
		{name: "no namespace", edit: map[string]string{"POD_NAMESPACE": ""}, wantErr: "POD_NAMESPACE is not set"},
		{name: "bad name", edit: map[string]string{"TSYMBIOTE_PROXY_STATE_SECRET": "Web_State"}, wantErr: `TSYMBIOTE_PROXY_STATE_SECRET: "Web_State" is not a Kubernetes object name`},
		{name: "same secret", edit: map[string]string{"TSYMBIOTE_PROXY_STATE_SECRET": "web-proxy-config"}, wantErr: "both name Secret"},
		{name: "bad control url", edit: map[string]string{"TS_CONTROL_URL": "headscale:8080"}, wantErr: "TS_CONTROL_URL:"},
		{name: "no auth key is fine", edit: map[string]string{"TS_AUTHKEY": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range good {
				env[k] = v
			}
			for k, v := range tt.edit {
				env[k] = v
			}
			_, err := configFromEnv(func(k string) string { return env[k] })
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("configFromEnv: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("configFromEnv = %v, want %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "tskey-auth-secret") {
				t.Fatalf("error shows the auth key: %v", err)
			}
		})
	}
}

func TestCommandErrors(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		env     map[string]string
		wantErr string
	}{
		{args: nil, env: nil, wantErr: "TSYMBIOTE_PROXY_CONFIG_SECRET is not set"},
		{args: []string{"extra"}, wantErr: `unknown command "extra"`},
		{args: []string{"--metrics-adr=:1"}, wantErr: "unknown flag: --metrics-adr"},
	} {
		cmd := newCommand(func(k string) string { return tt.env[k] })
		cmd.SetArgs(tt.args)
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.wantErr)
		}
	}
	cmd := newCommand(func(string) string { return "" })
	cmd.SetArgs([]string{"--help"})
	var out bytes.Buffer
	cmd.SetOut(&out)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--metrics-addr", ":9002", "TSYMBIOTE_PROXY_STATE_SECRET", "--kubeconfig"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %s:\n%s", want, out.String())
		}
	}
}
