package podbackend

import (
	"os"
	"path/filepath"
	"testing"

	"tailscale.com/types/logger"
)

func TestListenPort(t *testing.T) {
	dir := t.TempDir()
	if got := loadListenPort(dir); got != 0 {
		t.Fatalf("no file: got %d, want 0", got)
	}
	saveListenPort(logger.Discard, dir, 41641)
	if got := loadListenPort(dir); got != 41641 {
		t.Fatalf("saved 41641, loaded %d", got)
	}
	saveListenPort(logger.Discard, dir, 0) // not bound: keeps the old one
	if got := loadListenPort(dir); got != 41641 {
		t.Fatalf("after saving 0: loaded %d, want 41641", got)
	}
	for _, bad := range []string{"", "x", "70000", "-1"} {
		if err := os.WriteFile(filepath.Join(dir, portFile), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := loadListenPort(dir); got != 0 {
			t.Errorf("file %q: got %d, want 0", bad, got)
		}
	}
}

func FuzzLoadListenPort(f *testing.F) {
	for _, s := range []string{"41641\n", "0", "65535", "65536", " 7 ", "x"} {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, s string) {
		if err := os.WriteFile(filepath.Join(dir, portFile), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = loadListenPort(dir) // must not panic; any uint16 is fine
	})
}
