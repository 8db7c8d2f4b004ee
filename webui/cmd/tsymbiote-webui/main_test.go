package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestHelp checks that the stand-alone binary names itself in --help and
// lists the WebUI's flags.
func TestHelp(t *testing.T) {
	cmd := newCommand(func(string) string { return "" })
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tsymbiote-webui [flags]", "--generate-auth", "--scopes strings"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}
