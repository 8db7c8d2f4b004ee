// Command install-cni is tailscale-cni's init container: it copies the shim
// into the node's CNI bin dir and chains tailscale-cni into the node's first
// conflist (idempotently), or with --uninstall removes both.
package main

import (
	"flag"
	"log"
	"os"

	"tsymbiote.dhouti.dev/cni/internal/install"
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func main() {
	var (
		shim      = flag.String("shim", envOr("TS_CNI_SHIM", "/opt/tailscale-cni/tailscale-cni"), "the shim binary to install (env TS_CNI_SHIM)")
		binDir    = flag.String("cni-bin-dir", envOr("CNI_BIN_DIR", "/host/opt/cni/bin"), "the node's CNI bin dir, as mounted (env CNI_BIN_DIR)")
		confDir   = flag.String("cni-conf-dir", envOr("CNI_CONF_DIR", "/host/etc/cni/net.d"), "the node's CNI conf dir, as mounted (env CNI_CONF_DIR)")
		socket    = flag.String("daemon-socket", envOr("TS_CNI_SOCKET", "/var/run/tailscale-cni/daemon.sock"), "the daemon socket the shim dials, as the node sees it (env TS_CNI_SOCKET)")
		timeout   = flag.String("timeout", envOr("TS_CNI_SHIM_TIMEOUT", ""), "per-call timeout for the shim, like 90s; empty keeps the shim's default")
		uninstall = flag.Bool("uninstall", false, "remove tailscale-cni from every conflist and the shim from the bin dir")
	)
	flag.Parse()
	o := install.Options{Shim: *shim, BinDir: *binDir, ConfDir: *confDir, Entry: map[string]any{"daemonSocket": *socket}}
	if *timeout != "" {
		o.Entry["timeout"] = *timeout
	}
	if *uninstall {
		if err := install.Uninstall(o); err != nil {
			log.Fatalf("install-cni: uninstall: %v", err)
		}
		log.Printf("install-cni: removed tailscale-cni from %s and %s", *confDir, *binDir)
		return
	}
	path, err := install.Install(o)
	if err != nil {
		log.Fatalf("install-cni: %v", err)
	}
	log.Printf("install-cni: shim in %s; tailscale-cni chained into %s", *binDir, path)
}
