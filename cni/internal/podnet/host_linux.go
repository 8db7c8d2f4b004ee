package podnet

import (
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"
	"tailscale.com/types/logger"
)

// Host is this machine's kernel, as the daemon's Manager drives it: each
// method is the package function of the same name. It has no state, so one
// value is safe to use from any number of goroutines.
type Host struct{}

// CheckNetNS reports why path is not a network namespace, or nil if it is.
func (Host) CheckNetNS(path string) error {
	h, err := ns.GetNS(path)
	if err != nil {
		return err
	}
	_ = h.Close() // it opened, so it is one
	return nil
}

// EnableForwarding calls EnableForwarding and drops the previous values,
// which only tests restore.
func (Host) EnableForwarding(want6 bool) error {
	_, err := EnableForwarding(want6)
	return err
}

// PrepareHost calls PrepareHost.
func (Host) PrepareHost(p Pod) error { return PrepareHost(p) }

// AttachPod calls AttachPod.
func (Host) AttachPod(logf logger.Logf, p Pod, addrs []netip.Prefix) ([]netip.Prefix, error) {
	return AttachPod(logf, p, addrs)
}

// PodMAC calls PodMAC.
func (Host) PodMAC(p Pod) (string, error) { return PodMAC(p) }

// Check calls Check.
func (Host) Check(p Pod, addrs []netip.Prefix) error { return Check(p, addrs) }

// Teardown calls Teardown.
func (Host) Teardown(p Pod) error { return Teardown(p) }

// Sweep calls Sweep.
func (Host) Sweep(logf logger.Logf, keepLink func(string) bool, keepTable func(int) bool) (int, error) {
	return Sweep(logf, keepLink, keepTable)
}
