package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestUpToDate fails when the committed api.gen.ts is not what the Go
// types generate, the same check as make check-generate, in go test.
func TestUpToDate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "api.gen.ts")
	if err := run("../..", out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("../../frontend/src/api.gen.ts")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(committed) {
		t.Errorf("frontend/src/api.gen.ts is stale: run make generate (or go generate in webui)")
	}
}
