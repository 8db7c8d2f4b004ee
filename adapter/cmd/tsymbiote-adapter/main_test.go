package main

import "testing"

// TestName checks that the stand-alone binary names itself, not "adapter", in
// its usage line; the flags are the cli package's and are checked there and
// under `tsymbiote adapter`.
func TestName(t *testing.T) {
	if got := newCommand(func(string) string { return "" }).UseLine(); got != "tsymbiote-adapter [flags]" {
		t.Errorf("usage line %q, want %q", got, "tsymbiote-adapter [flags]")
	}
}
