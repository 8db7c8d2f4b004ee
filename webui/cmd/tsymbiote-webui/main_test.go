package main

import "testing"

// TestName checks that the stand-alone binary names itself, not "webui", in
// its usage line; the flags are the cli package's and are checked there and
// under `tsymbiote webui`.
func TestName(t *testing.T) {
	if got := newCommand(func(string) string { return "" }).UseLine(); got != "tsymbiote-webui [flags]" {
		t.Errorf("usage line %q, want %q", got, "tsymbiote-webui [flags]")
	}
}
