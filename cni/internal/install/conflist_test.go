package install

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const flannel = `{
  "name": "cbr0",
  "cniVersion": "1.0.0",
  "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "mtu": 1450}
  ]
}`

func TestInstallIdempotentAndUninstall(t *testing.T) {
	dir := t.TempDir()
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	mustDo(t, os.MkdirAll(bin, 0o755))
	mustDo(t, os.MkdirAll(conf, 0o755))
	shim := filepath.Join(dir, "shim")
	mustDo(t, os.WriteFile(shim, []byte("#!/bin/true\n"), 0o755))
	mustDo(t, os.WriteFile(filepath.Join(conf, "10-flannel.conflist"), []byte(flannel), 0o644))
	mustDo(t, os.WriteFile(filepath.Join(conf, "20-other.conflist"), []byte(flannel), 0o600))
	o := Options{Shim: shim, BinDir: bin, ConfDir: conf, Entry: map[string]any{"daemonSocket": "/var/run/tailscale-cni/daemon.sock"}}
	var first []byte
	for i := range 3 {
		path, err := Install(o)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(path) != "10-flannel.conflist" {
			t.Fatalf("installed into %s", path)
		}
		got, _ := os.ReadFile(path)
		if i == 0 {
			first = got
		} else if string(got) != string(first) {
			t.Fatalf("install #%d changed the file again:\n%s", i+1, got)
		}
	}
	var doc struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(first, &doc); err != nil {
		t.Fatal(err)
	}
	if n := len(doc.Plugins); n != 3 || doc.Plugins[2]["type"] != PluginType {
		t.Fatalf("plugins after install: %v", doc.Plugins)
	}
	if !strings.Contains(string(first), `"mtu": 1450`) {
		t.Errorf("numbers not kept: %s", first)
	}
	if st, _ := os.Stat(filepath.Join(bin, PluginType)); st == nil || st.Mode().Perm() != 0o755 {
		t.Errorf("shim not installed executable: %v", st)
	}
	if other, _ := os.ReadFile(filepath.Join(conf, "20-other.conflist")); string(other) != flannel {
		t.Errorf("second conflist touched")
	}
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(conf, "10-flannel.conflist"))
	if strings.Contains(string(got), PluginType) {
		t.Errorf("uninstall left the plugin:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(bin, PluginType)); !os.IsNotExist(err) {
		t.Errorf("uninstall left the shim")
	}
	if err := Uninstall(o); err != nil {
		t.Errorf("second uninstall: %v", err)
	}
}

func TestInstallNeedsConflist(t *testing.T) {
	dir := t.TempDir()
	shim := filepath.Join(dir, "shim")
	mustDo(t, os.WriteFile(shim, []byte("x"), 0o755))
	_, err := Install(Options{Shim: shim, BinDir: dir, ConfDir: dir})
	if err == nil || !strings.Contains(err.Error(), "no *.conflist") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzAddToConflist(f *testing.F) {
	f.Add([]byte(flannel))
	f.Add([]byte(`{"name":"x","plugins":[{"type":"tailscale-cni"}]}`))
	f.Add([]byte(`{"name":"x","plugins":[]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"name":"x","plugins":[1]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, _, err := AddToConflist(data, map[string]any{"daemonSocket": "/s"})
		if err != nil {
			return
		}
		again, changed, err := AddToConflist(out, map[string]any{"daemonSocket": "/s"})
		if err != nil || changed || string(again) != string(out) {
			t.Fatalf("second add not a no-op: changed=%v err=%v", changed, err)
		}
		back, _, err := RemoveFromConflist(out)
		if err != nil {
			t.Fatalf("remove after add: %v", err)
		}
		if strings.Contains(string(back), `"tailscale-cni"`) {
			t.Fatalf("remove left the plugin: %s", back)
		}
	})
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestUninstallRestoresOriginal checks that install then uninstall gives the
// node its conflist back byte for byte when nothing else changed it, and
// keeps what another writer changed meanwhile.
func TestUninstallRestoresOriginal(t *testing.T) {
	// Spacing, key order and no trailing newline, as a network plugin may
	// write them, and as re-encoding would not.
	const orig = "{\"plugins\": [{\"type\": \"bridge\", \"bridge\": \"cni0\"}],\n\t\"name\": \"k8s\", \"cniVersion\": \"1.0.0\"}"
	for _, tc := range []struct {
		name string
		// between runs after Install, on the installed conflist.
		between func(t *testing.T, path string)
		// want is the conflist after Uninstall; "" means orig.
		want string
	}{
		{name: "untouched"},
		{name: "installed twice", between: func(t *testing.T, path string) {
			// A restarted init container finds its own entry: the backup
			// must stay the node's original, not the chained file.
			if _, err := Install(testOptions(t, filepath.Dir(filepath.Dir(path)))); err != nil {
				t.Fatal(err)
			}
		}},
		{
			name: "changed by another writer",
			between: func(t *testing.T, path string) {
				b, _ := os.ReadFile(path)
				mustDo(t, os.WriteFile(path, []byte(strings.Replace(string(b), `"cni0"`, `"cni1"`, 1)), 0o644))
			},
			want: "{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"k8s\",\n  \"plugins\": [\n    {\n      \"bridge\": \"cni1\",\n      \"type\": \"bridge\"\n    }\n  ]\n}\n",
		},
		{
			name: "rewritten by the network plugin",
			between: func(t *testing.T, path string) {
				mustDo(t, os.WriteFile(path, []byte(flannel), 0o644))
			},
			want: flannel, // nothing of ours in it: left alone
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions(t, dir)
			path := filepath.Join(o.ConfDir, "10-k8s.conflist")
			mustDo(t, os.WriteFile(path, []byte(orig), 0o644))
			if _, err := Install(o); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(path); !strings.Contains(string(got), PluginType) {
				t.Fatalf("not chained:\n%s", got)
			}
			if tc.between != nil {
				tc.between(t, path)
			}
			if err := Uninstall(o); err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == "" {
				want = orig
			}
			if got, _ := os.ReadFile(path); string(got) != want {
				t.Errorf("conflist after uninstall:\n%q\nwant\n%q", got, want)
			}
			if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
				t.Errorf("mode %v", st.Mode())
			}
			ents, _ := os.ReadDir(o.ConfDir)
			if len(ents) != 1 {
				t.Errorf("conf dir holds %v, want only the conflist", ents)
			}
		})
	}
}

// TestUninstallDropsOrphanBackup checks that a backup whose conflist is gone
// does not outlive the uninstall.
func TestUninstallDropsOrphanBackup(t *testing.T) {
	o := testOptions(t, t.TempDir())
	path := filepath.Join(o.ConfDir, "10-k8s.conflist")
	mustDo(t, os.WriteFile(path, []byte(flannel), 0o644))
	if _, err := Install(o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(backupPath(path)); err != nil {
		t.Fatalf("no backup: %v", err)
	}
	mustDo(t, os.Remove(path))
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(o.ConfDir); len(ents) != 0 {
		t.Errorf("conf dir holds %v", ents)
	}
}

// testOptions makes bin and conf dirs and a shim under dir.
func testOptions(t *testing.T, dir string) Options {
	t.Helper()
	o := Options{Shim: filepath.Join(dir, "shim"), BinDir: filepath.Join(dir, "bin"), ConfDir: filepath.Join(dir, "net.d"), Entry: map[string]any{"daemonSocket": "/s"}}
	mustDo(t, os.MkdirAll(o.BinDir, 0o755))
	mustDo(t, os.MkdirAll(o.ConfDir, 0o755))
	mustDo(t, os.WriteFile(o.Shim, []byte("#!/bin/true\n"), 0o755))
	return o
}
