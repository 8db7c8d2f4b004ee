package podbackend

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDiscoKeyKept(t *testing.T) {
	dir := t.TempDir()
	k1 := discoKey(t.Logf, dir)
	if k1.IsZero() {
		t.Fatal("no disco key for a new node")
	}
	st, err := os.Stat(filepath.Join(dir, discoFile))
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		t.Errorf("%s has mode %v, want 0600", discoFile, m)
	}
	if k2 := discoKey(t.Logf, dir); !k2.Equal(k1) {
		t.Error("second start got another disco key")
	}
}

func TestDiscoKeyBadFile(t *testing.T) {
	tests := []struct {
		name, content string
	}{
		{"empty", ""},
		{"not hex", "zz"},
		{"short", "00112233"},
		{"zero", "0000000000000000000000000000000000000000000000000000000000000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, discoFile)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := loadDiscoKey(dir); err == nil {
				t.Fatalf("loadDiscoKey accepted %q", tt.content)
			}
			k := discoKey(t.Logf, dir)
			if k.IsZero() {
				t.Fatal("no new key in place of a bad file")
			}
			if k2, err := loadDiscoKey(dir); err != nil || !k2.Equal(k) {
				t.Errorf("new key not saved: %v", err)
			}
		})
	}
}

func FuzzLoadDiscoKey(f *testing.F) {
	f.Add([]byte("0011223344556677889900112233445566778899001122334455667788990011\n"))
	f.Add([]byte(""))
	f.Add([]byte("zz"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, discoFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if k, err := loadDiscoKey(dir); err == nil && k.IsZero() {
			t.Fatal("zero key accepted")
		}
	})
}
