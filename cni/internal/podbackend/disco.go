package podbackend

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go4.org/mem"
	"tailscale.com/envknob"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
)

// discoFile, in a node's state dir, keeps the node's disco private key, so
// that a daemon restarted after a crash starts the node with the key its
// peers already hold. A node that comes back with a new disco key (what
// tailscaled does at every start) cannot be reached by disco (the pings
// that find and keep the direct path) until the control plane has told
// every peer the new key, which with Headscale's default batching took
// seconds per node at 30 pods; with the old key its peers' view of it is
// right at once (its endpoints are, too: see portFile). The key sits
// beside the FileStore, which holds the node's far more powerful node and
// machine keys, with the same mode (0600 in a 0700 dir): whoever could
// read the one could read the others. See the CNI README's recovery
// section for the trade-off.
const discoFile = "disco.key"

// keepDiscoKey reports whether nodes keep their disco key across daemon
// restarts: TS_CNI_KEEP_DISCO_KEY=false makes every start draw a new one,
// as tailscaled does. Read once, at the first pod.
var keepDiscoKey = sync.OnceValue(func() bool { return envknob.BoolDefaultTrue("TS_CNI_KEEP_DISCO_KEY") })

// discoKey is the disco key for the node whose state dir is dir: the one
// saved there, or, if there is none (a new node) or it is unreadable, a
// new one, saved for the next start. Zero (magicsock draws its own) when
// keepDiscoKey is off, or when a new key cannot be saved.
func discoKey(logf logger.Logf, dir string) key.DiscoPrivate {
	if !keepDiscoKey() {
		os.Remove(filepath.Join(dir, discoFile))
		return key.DiscoPrivate{}
	}
	k, err := loadDiscoKey(dir)
	if err == nil {
		return k
	}
	if !os.IsNotExist(err) {
		logf("disco key: %v; using a new one", err)
	}
	k, err = newDiscoKey(dir)
	if err != nil {
		logf("disco key: %v", err)
		return key.DiscoPrivate{}
	}
	return k
}

// loadDiscoKey reads the key in dir's discoFile: 64 hex digits.
func loadDiscoKey(dir string) (key.DiscoPrivate, error) {
	path := filepath.Join(dir, discoFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return key.DiscoPrivate{}, err
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(raw) != 32 {
		return key.DiscoPrivate{}, fmt.Errorf("%s: not 64 hex digits", path)
	}
	k := key.DiscoPrivateFromRaw32(mem.B(raw))
	if k.IsZero() {
		return key.DiscoPrivate{}, fmt.Errorf("%s: zero key", path)
	}
	return k, nil
}

// newDiscoKey makes a disco key, as key.NewDisco does, and writes it to
// dir's discoFile (0600, written whole or not at all).
func newDiscoKey(dir string) (key.DiscoPrivate, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return key.DiscoPrivate{}, fmt.Errorf("making a disco key: %w", err)
	}
	// Curve25519 clamping, as key.NewDisco's: the key seals with NaCl box.
	raw[0] &= 248
	raw[31] = (raw[31] & 127) | 64
	path := filepath.Join(dir, discoFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(hex.EncodeToString(raw[:])+"\n"), 0o600); err != nil {
		return key.DiscoPrivate{}, fmt.Errorf("saving the disco key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return key.DiscoPrivate{}, fmt.Errorf("saving the disco key: %w", err)
	}
	return key.DiscoPrivateFromRaw32(mem.B(raw[:])), nil
}
