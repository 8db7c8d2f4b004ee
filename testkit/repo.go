package testkit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// RepoRoot is the repository's root: the nearest directory at or above the
// working directory holding go.work. Every module's tests run inside it.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (with go.work) not found above the working directory")
		}
		dir = parent
	}
}

// Pins reads hack/versions.env of the checkout at root: one NAME=version a
// line, blank lines and # comments allowed. Every tool that builds or checks
// pinned versions reads them here, so the file has one grammar.
func Pins(root string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(root, "hack", "versions.env"))
	if err != nil {
		return nil, fmt.Errorf("reading the pins: %w", err)
	}
	pins := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("hack/versions.env:%d: %q is not NAME=version", i+1, line)
		}
		pins[k] = v
	}
	return pins, nil
}

// PinnedVersion returns the version hack/versions.env pins for name (such
// as TAILSCALE_VERSION).
func PinnedVersion(name string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	pins, err := Pins(root)
	if err != nil {
		return "", err
	}
	if v, ok := pins[name]; ok {
		return v, nil
	}
	return "", fmt.Errorf("%s not pinned in hack/versions.env", name)
}

// pins names the version each pinned binary is built at. hack/build-bin.sh
// names the file bin/<name>-<version>; the versioned name (not the
// bin/<name> symlink) makes a test refuse a binary left from an old pin.
var pins = map[string]string{
	"headscale":               "HEADSCALE_VERSION",
	"tailscaled":              "TAILSCALE_VERSION",
	"tailscale":               "TAILSCALE_VERSION",
	"etcd":                    "ETCD_VERSION",
	"kube-apiserver":          "KUBERNETES_VERSION",
	"kube-controller-manager": "KUBERNETES_VERSION",
	"cni-bridge":              "CNI_PLUGINS_VERSION",
	"cni-ptp":                 "CNI_PLUGINS_VERSION",
	"cni-host-local":          "CNI_PLUGINS_VERSION",
	"cni-loopback":            "CNI_PLUGINS_VERSION",
}

// FindBinary returns the path of bin/<name> at the repository root, at its
// pinned version when it has one, or an error saying how to build it. It is
// Binary for code that is not a test (the demo).
func FindBinary(name string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	file := name
	if pin, ok := pins[name]; ok {
		v, err := PinnedVersion(pin)
		if err != nil {
			return "", err
		}
		file = name + "-" + v
	}
	p := filepath.Join(root, "bin", file)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not built (%s missing): run `make tools`", name, p)
	}
	return p, nil
}

// Binary is FindBinary for a test: a missing binary skips t, or fails it
// under CI=true, like every other missing prerequisite (see Missing).
// It implies Integration: binaries in ./bin are real servers.
func Binary(t testing.TB, name string) string {
	t.Helper()
	Integration(t)
	p, err := FindBinary(name)
	if err != nil {
		Missing(t, "%v", err)
	}
	return p
}
