package main

import (
	"fmt"
	"strings"
)

// Part is one image: what goes in it and how it starts.
type Part struct {
	Name string // file name in the output directory, without .tar
	Ref  string // repository:tag the charts (or tests) ask for
	// User the entrypoint runs as (and its group). Non-root wherever the
	// part allows it; each root one says why in Parts.
	User       int
	Entrypoint []string
	Binaries   map[string]Binary // path in the image to the program there
	Dirs       []File            // directories the part writes to at run time
}

// Parts lists every image this program builds, in the order it builds them.
// version is the charts' appVersion; the test images are tagged with the
// versions they run.
func Parts(r *Repo, version string) ([]Part, error) {
	tsVersion, err := r.Pin("TAILSCALE_VERSION")
	if err != nil {
		return nil, err
	}
	hsVersion, err := r.Pin("HEADSCALE_VERSION")
	if err != nil {
		return nil, err
	}
	// The CNI daemon embeds tailscale: the same stamp and tag as the
	// Makefile's `binaries` target (TS_VERSION_LDFLAGS), so that the stock
	// CLI on a pod's socket does not warn of a version mismatch and every
	// pod shares one network monitor.
	tsStamp := strings.TrimPrefix(tsVersion, "v")
	daemonLDFlags := []string{
		"-X", "tailscale.com/version.longStamp=" + tsStamp,
		"-X", "tailscale.com/version.shortStamp=" + tsStamp,
	}
	const cniDir = "/opt/tailscale-cni" // charts/tailscale-cni/templates/daemonset.yaml
	return []Part{
		{
			// Root: the daemon makes TUNs, veths, routes and enters pods'
			// network namespaces with NET_ADMIN and SYS_ADMIN, which a
			// non-root user in a container does not get (Kubernetes adds
			// no ambient capabilities); install-cni, the init container of
			// the same image, writes into the node's root-owned CNI dirs.
			Name: "tailscale-cni", Ref: "tsymbiote/tailscale-cni:" + version, User: Root,
			Entrypoint: []string{cniDir + "/tailscale-cni-daemon"},
			Binaries: map[string]Binary{
				cniDir + "/tailscale-cni-daemon": {Module: "cni", Pkg: "./cmd/tailscale-cni-daemon",
					Tags: []string{"ts_omit_portmapper"}, LDFlags: daemonLDFlags},
				cniDir + "/tailscale-cni": {Module: "cni", Pkg: "./cmd/tailscale-cni"},
				cniDir + "/install-cni":   {Module: "cni", Pkg: "./cmd/install-cni"},
			},
		},
		{
			// Non-root: it talks only to the API server and serves its
			// webhook on an unprivileged port (the chart runs it as 65532).
			Name: "operator", Ref: "tsymbiote/operator:" + version, User: NonRoot,
			Entrypoint: []string{"/usr/local/bin/tsymbiote-operator"},
			Binaries: map[string]Binary{
				"/usr/local/bin/tsymbiote-operator": {Module: "operator", Pkg: "./cmd/tsymbiote-operator"},
			},
		},
		{
			// Root: as a sidecar it finds tailscaled's socket through
			// /proc/<pid>/root of another container, which needs
			// CAP_SYS_PTRACE in effect; the operator adds that capability,
			// but Kubernetes grants added capabilities only to root.
			Name: "adapter", Ref: "tsymbiote/adapter:" + version, User: Root,
			Entrypoint: []string{"/usr/local/bin/tsymbiote-adapter"},
			Binaries: map[string]Binary{
				"/usr/local/bin/tsymbiote-adapter": {Module: "adapter", Pkg: "./cmd/tsymbiote-adapter"},
			},
		},
		{
			// Non-root: a tsnet node (userspace networking, no TUN) that
			// keeps its node state in a Secret and writes only tsnet's
			// working files to /tmp.
			Name: "proxy", Ref: "tsymbiote/proxy:" + version, User: NonRoot,
			Entrypoint: []string{"/usr/local/bin/tsymbiote-proxy"},
			Binaries: map[string]Binary{
				"/usr/local/bin/tsymbiote-proxy": {Module: "operator", Pkg: "./cmd/tsymbiote-proxy"},
			},
		},
		{
			// Non-root: a tsnet node (userspace networking) that keeps its
			// state in the emptyDir the operator mounts for it.
			Name: "webui", Ref: "tsymbiote/webui:" + version, User: NonRoot,
			Entrypoint: []string{"/usr/local/bin/tsymbiote-webui"},
			Binaries: map[string]Binary{
				"/usr/local/bin/tsymbiote-webui": {Module: "webui", Pkg: "./cmd/tsymbiote-webui"},
			},
		},
		{
			// Root: the stock tailscaled in a pod makes a TUN and routes
			// (userspace networking could run without, but tests use both).
			Name: "tailscale", Ref: "tsymbiote/tailscale:" + tsVersion, User: Root,
			Entrypoint: []string{"/usr/local/bin/tailscaled"},
			Binaries: map[string]Binary{
				"/usr/local/bin/tailscaled": {Prebuilt: "bin/tailscaled-" + tsVersion},
				"/usr/local/bin/tailscale":  {Prebuilt: "bin/tailscale-" + tsVersion},
			},
			Dirs: []File{Dir("/var/lib/tailscale", 0o700, Root), Dir("/var/run/tailscale", 0o755, Root)},
		},
		{
			// Non-root: it needs only its state and socket directories.
			Name: "headscale", Ref: "tsymbiote/headscale:" + hsVersion, User: NonRoot,
			Entrypoint: []string{"/usr/local/bin/headscale"},
			Binaries: map[string]Binary{
				"/usr/local/bin/headscale": {Prebuilt: "bin/headscale-" + hsVersion},
			},
			Dirs: []File{
				Dir("/etc/headscale", 0o755, NonRoot),
				Dir("/var/lib/headscale", 0o700, NonRoot),
				Dir("/var/run/headscale", 0o755, NonRoot),
			},
		},
		{
			Name: "testapp", Ref: "tsymbiote/testapp:" + version, User: NonRoot,
			Entrypoint: []string{"/usr/local/bin/testapp"},
			Binaries: map[string]Binary{
				"/usr/local/bin/testapp": {Module: "hack/images", Pkg: "./testapp"},
			},
		},
		{
			// The sandbox image Kubernetes v1.34 pins; with containerd's
			// sandbox_image set to it, a cluster with no registry access
			// still starts pods. Non-root: it only waits for a signal.
			Name: "pause", Ref: "registry.k8s.io/pause:3.10", User: NonRoot,
			Entrypoint: []string{"/pause"},
			Binaries: map[string]Binary{
				"/pause": {Module: "hack/images", Pkg: "./pause"},
			},
		},
	}, nil
}

// Select returns the parts named in names, or all of them when names is empty.
func Select(parts []Part, names []string) ([]Part, error) {
	if len(names) == 0 {
		return parts, nil
	}
	var out []Part
	for _, n := range names {
		i := indexOf(parts, n)
		if i < 0 {
			return nil, fmt.Errorf("no image %q (have %s)", n, strings.Join(partNames(parts), ", "))
		}
		out = append(out, parts[i])
	}
	return out, nil
}

func indexOf(parts []Part, name string) int {
	for i, p := range parts {
		if p.Name == name {
			return i
		}
	}
	return -1
}

func partNames(parts []Part) []string {
	var names []string
	for _, p := range parts {
		names = append(names, p.Name)
	}
	return names
}
