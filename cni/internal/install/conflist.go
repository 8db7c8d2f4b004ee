// Package install is the logic of install-cni, the DaemonSet's init
// container: it copies the shim into the node's CNI bin dir and chains
// tailscale-cni into the node's existing conflist, or undoes both.
package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// PluginType is the conflist "type" of our plugin.
const PluginType = "tailscale-cni"

// AddToConflist returns the conflist with entry appended to its plugins, or
// replacing an existing tailscale-cni entry (so that running twice, or with
// a new socket path, leaves exactly one). changed is false when the result
// is the input.
func AddToConflist(data []byte, entry map[string]any) (out []byte, changed bool, err error) {
	doc, plugins, err := parse(data)
	if err != nil {
		return nil, false, err
	}
	entry = maps(entry)
	entry["type"] = PluginType
	idx := slices.IndexFunc(plugins, isOurs)
	if idx >= 0 {
		if jsonEqual(plugins[idx], entry) {
			return data, false, nil
		}
		plugins = slices.DeleteFunc(plugins, isOurs)
	}
	plugins = append(plugins, entry)
	doc["plugins"] = plugins
	out, err = encode(doc)
	return out, true, err
}

// RemoveFromConflist removes every tailscale-cni entry.
func RemoveFromConflist(data []byte) (out []byte, changed bool, err error) {
	doc, plugins, err := parse(data)
	if err != nil {
		return nil, false, err
	}
	if !slices.ContainsFunc(plugins, isOurs) {
		return data, false, nil
	}
	doc["plugins"] = slices.DeleteFunc(plugins, isOurs)
	out, err = encode(doc)
	return out, true, err
}

func maps(m map[string]any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func isOurs(p any) bool {
	m, ok := p.(map[string]any)
	return ok && m["type"] == PluginType
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func parse(data []byte) (map[string]any, []any, error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep numbers (MTUs, ports) exactly as written
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("conflist is not a JSON object: %w", err)
	}
	if doc == nil {
		return nil, nil, errors.New("conflist is null")
	}
	if name, _ := doc["name"].(string); name == "" {
		return nil, nil, errors.New(`conflist has no "name"`)
	}
	raw, ok := doc["plugins"]
	if !ok {
		return nil, nil, errors.New(`conflist has no "plugins" list`)
	}
	plugins, ok := raw.([]any)
	if !ok || len(plugins) == 0 {
		return nil, nil, errors.New(`conflist "plugins" is not a non-empty list`)
	}
	for i, p := range plugins {
		m, ok := p.(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("conflist plugin %d is not an object", i)
		}
		if t, _ := m["type"].(string); t == "" {
			return nil, nil, fmt.Errorf(`conflist plugin %d has no "type"`, i)
		}
	}
	return doc, plugins, nil
}

func encode(doc map[string]any) ([]byte, error) {
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// FirstConflist returns the first *.conflist in dir by name, the one the
// runtime uses.
func FirstConflist(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("reading CNI conf dir: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conflist") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no *.conflist in %s: tailscale-cni chains after the node's network plugin, which must be installed first", dir)
	}
	slices.Sort(names)
	return filepath.Join(dir, names[0]), nil
}

// writeAtomic replaces path's contents without a moment where a reader (the
// runtime) sees a half-written file.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Options configure Install and Uninstall.
type Options struct {
	Shim    string // the shim binary to copy
	BinDir  string // the node's CNI bin dir
	ConfDir string // the node's CNI conf dir
	Entry   map[string]any
}

// Install copies the shim and chains the plugin into the first conflist. It
// returns the conflist it changed (or found already right). Before it first
// chains the plugin into a conflist it keeps that file's bytes beside it
// (backupPath), so that Uninstall can put back exactly what the node had.
func Install(o Options) (string, error) {
	data, err := os.ReadFile(o.Shim)
	if err != nil {
		return "", fmt.Errorf("reading shim: %w", err)
	}
	if err := writeAtomic(filepath.Join(o.BinDir, PluginType), data, 0o755); err != nil {
		return "", fmt.Errorf("installing shim into %s: %w", o.BinDir, err)
	}
	path, err := FirstConflist(o.ConfDir)
	if err != nil {
		return "", err
	}
	return path, editConflist(path, func(b []byte) ([]byte, bool, error) {
		if err := saveOriginal(path, b); err != nil {
			return nil, false, err
		}
		return AddToConflist(b, o.Entry)
	})
}

// backupSuffix ends the name of a conflist's backup. Runtimes read only
// *.conf, *.conflist and *.json, and the leading dot hides it from people
// listing the directory, so the backup is never taken for a network.
const backupSuffix = ".tailscale-cni-orig"

// backupPath is where Install keeps the conflist at path as it was before
// tailscale-cni was chained into it.
func backupPath(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+backupSuffix)
}

// saveOriginal keeps data, the conflist at path, as its backup when it does
// not hold tailscale-cni yet. A conflist that already holds it is left
// alone: it is not the node's own (a restarted init container sees ours). A
// conflist the node's network plugin rewrote since is its new original.
func saveOriginal(path string, data []byte) error {
	_, plugins, err := parse(data)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(plugins, isOurs) {
		return nil
	}
	if err := writeAtomic(backupPath(path), data, 0o600); err != nil {
		return fmt.Errorf("keeping the original of %s: %w", path, err)
	}
	return nil
}

// Uninstall removes the plugin from every conflist in the conf dir and the
// shim from the bin dir. A conflist whose other plugins are still what they
// were before Install gets its original bytes back (key order, spacing and
// all); one that changed since keeps those changes, without tailscale-cni.
func Uninstall(o Options) error {
	ents, err := os.ReadDir(o.ConfDir)
	if err != nil {
		return fmt.Errorf("reading CNI conf dir: %w", err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".conflist"):
			if err := restoreConflist(filepath.Join(o.ConfDir, name)); err != nil {
				errs = append(errs, err)
			}
		case strings.HasPrefix(name, ".") && strings.HasSuffix(name, backupSuffix):
			// The backup of a conflist that is gone.
			conflist := filepath.Join(o.ConfDir, strings.TrimSuffix(name[1:], backupSuffix))
			if _, err := os.Stat(conflist); errors.Is(err, os.ErrNotExist) {
				if err := os.Remove(filepath.Join(o.ConfDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := os.Remove(filepath.Join(o.BinDir, PluginType)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// restoreConflist takes tailscale-cni out of the conflist at path, putting
// back its backup's bytes when the rest is unchanged, and drops the backup.
func restoreConflist(path string) error {
	orig, err := os.ReadFile(backupPath(path))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading the original of %s: %w", path, err)
	}
	err = editConflist(path, func(b []byte) ([]byte, bool, error) {
		out, changed, err := RemoveFromConflist(b)
		if err != nil || !changed || orig == nil {
			return out, changed, err
		}
		if sameJSON(out, orig) {
			return orig, true, nil
		}
		return out, true, nil
	})
	if err != nil {
		return err
	}
	if err := os.Remove(backupPath(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the original of %s: %w", path, err)
	}
	return nil
}

// sameJSON reports whether a and b hold the same JSON document, whatever
// their key order and spacing.
func sameJSON(a, b []byte) bool {
	canon := func(data []byte) ([]byte, bool) {
		var v any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		out, err := json.Marshal(v)
		return out, err == nil
	}
	x, okA := canon(a)
	y, okB := canon(b)
	return okA && okB && bytes.Equal(x, y)
}

func editConflist(path string, edit func([]byte) ([]byte, bool, error)) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, changed, err := edit(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if !changed {
		return nil
	}
	return writeAtomic(path, out, st.Mode().Perm())
}
