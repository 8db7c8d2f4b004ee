package podbackend

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"tailscale.com/types/logger"
)

// portFile, in a node's state dir, keeps the UDP port its magicsock last
// bound, so that a daemon restarted (after a crash, an upgrade, a kill)
// binds it again. Its peers still hold the node's endpoints from before,
// and those stay right: their first WireGuard handshake reaches the node
// at once instead of going nowhere and being retried 5 s later, once the
// control plane has passed on a new port.
const portFile = "magicsock.port"

// loadListenPort is the port in dir's portFile, or 0 (any port) when there
// is none or it is unreadable. A port some other socket took meanwhile is
// no harm: magicsock then falls back to any port.
func loadListenPort(dir string) uint16 {
	data, err := os.ReadFile(filepath.Join(dir, portFile))
	if err != nil {
		return 0
	}
	p, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 16)
	if err != nil {
		return 0
	}
	return uint16(p)
}

// saveListenPort writes port to dir's portFile when it changed.
func saveListenPort(logf logger.Logf, dir string, port uint16) {
	if port == 0 || loadListenPort(dir) == port {
		return
	}
	path := filepath.Join(dir, portFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(int(port))+"\n"), 0o600); err != nil {
		logf("saving the node's UDP port: %v", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		logf("saving the node's UDP port: %v", err)
	}
}
