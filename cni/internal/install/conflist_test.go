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
