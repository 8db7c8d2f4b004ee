package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"tailscale.com/ipn"
	"tailscale.com/net/netmon"
	"tailscale.com/tstest"
	"tailscale.com/types/logger"
	"tailscale.com/util/eventbus"
	"tsymbiote.dhouti.dev/cni/internal/cnierr"
	"tsymbiote.dhouti.dev/cni/internal/plugin"
	"tsymbiote.dhouti.dev/cni/internal/podbackend"
	"tsymbiote.dhouti.dev/cni/internal/podnet"
	"tsymbiote.dhouti.dev/controlplane"
)

// harness is a Manager over fakes, with its state and run dirs in a
// temporary dir. It needs no root and no servers.
type harness struct {
	t     *testing.T
	cfg   Config
	net   *fakeNet
	cp    *fakeCP
	be    *fakeBackends
	clock *tstest.Clock
	pods  PodSource    // nil: no annotations
	ctrl  ControlPlane // h.cp when nil
	m     *Manager
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	// Registered first, so it runs last: after the Manager's Close, no
	// goroutine of the test's may be left.
	tstest.ResourceCheck(t)
	dir := t.TempDir()
	h := &harness{
		t: t,
		cfg: Config{
			StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"),
			IPv6: true, AddTimeout: time.Minute,
		},
		net:   newFakeNet(),
		cp:    newFakeCP(),
		clock: tstest.NewClock(tstest.ClockOpts{Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}),
	}
	h.be = newFakeBackends(h.net, h.cp)
	h.start()
	t.Cleanup(func() { h.m.Close() })
	return h
}

// start makes a new Manager over the same dirs and fakes: a daemon
// (re)starting on the same node.
func (h *harness) start() {
	h.t.Helper()
	h.startWith(h.be.start)
}

// startWith is start with the Manager's nodes started by startBackend.
func (h *harness) startWith(startBackend StartBackendFunc) {
	h.t.Helper()
	var ctrl ControlPlane = h.cp
	if h.ctrl != nil {
		ctrl = h.ctrl
	}
	m, err := NewManager(logger.WithPrefix(h.t.Logf, "daemon: "), h.cfg, Deps{
		ControlPlane: ctrl,
		Network:      h.net,
		StartBackend: startBackend,
		NewNetMon:    func(*eventbus.Bus, logger.Logf) (*netmon.Monitor, error) { return netmon.NewStatic(), nil },
		Clock:        h.clock,
		Pods:         h.pods,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.m = m
}

// restart closes the Manager, as a daemon stopping keeps its pods' state,
// and starts a new one.
func (h *harness) restart() {
	h.m.Close()
	h.start()
}

// pod returns an attachment for a pod named name in a fresh netns.
func (h *harness) pod(name string) Attachment {
	a := Attachment{
		ContainerID: "c0ffee" + name, NetNS: "/run/netns/cni-" + name, IfName: "eth0",
		Namespace: "default", Pod: name, PodUID: "uid-" + name,
	}
	h.net.addNetNS(a.NetNS)
	return a
}

func (h *harness) add(a Attachment) *Result {
	h.t.Helper()
	res, err := h.m.Add(context.Background(), a)
	if err != nil {
		h.t.Fatalf("ADD %s: %v", a.Pod, err)
	}
	return res
}

func (h *harness) del(a Attachment) {
	h.t.Helper()
	if err := h.m.Del(context.Background(), a); err != nil {
		h.t.Fatalf("DEL %s: %v", a.Pod, err)
	}
}

// entries lists the names in dir, none when it is missing.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// assertNothingLeft fails unless no pod has anything left anywhere: no
// kernel object, node, backend, state or socket, and none in memory.
func (h *harness) assertNothingLeft() {
	h.t.Helper()
	if got := h.net.liveObjects(); len(got) > 0 {
		h.t.Errorf("kernel objects left: %v", got)
	}
	if got := h.cp.liveNodes(); len(got) > 0 {
		h.t.Errorf("nodes left in the control plane: %v", got)
	}
	if n := h.be.liveCount(); n > 0 {
		h.t.Errorf("%d backends left running", n)
	}
	if got := entries(h.t, filepath.Join(h.cfg.StateDir, "pods")); len(got) > 0 {
		h.t.Errorf("pod state left: %v", got)
	}
	if got := entries(h.t, filepath.Join(h.cfg.RunDir, "pods")); len(got) > 0 {
		h.t.Errorf("socket dirs left: %v", got)
	}
	if n, _ := h.m.Status(); n > 0 {
		h.t.Errorf("Manager still holds %d pods", n)
	}
}

func (h *harness) made() []string {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	return slices.Clone(h.net.made)
}

func TestAddDel(t *testing.T) {
	h := newHarness(t)
	a := h.pod("web")
	res := h.add(a)
	if res.Interface != podnet.PodIfName || res.Sandbox != a.NetNS || res.NodeID == "" || res.Hostname != "k8s-default-web" {
		t.Errorf("ADD result = %+v", res)
	}
	if !slices.Equal(res.Addrs, addrsFor(res.NodeID)) {
		t.Errorf("ADD addresses = %v, want the node's %v", res.Addrs, addrsFor(res.NodeID))
	}
	if got, want := h.made(), []string{"rules", "tun", "node", "veth"}; !slices.Equal(got, want) {
		t.Errorf("ADD made %v, want %v in that order", got, want)
	}
	rec, err := h.m.load(a.ContainerID)
	if err != nil || !rec.Ready || rec.NodeID != res.NodeID {
		t.Errorf("record after ADD = %+v, %v; want Ready with node %s", rec, err, res.NodeID)
	}
	sock := SocketPath(h.cfg.RunDir, a.Namespace, a.Pod, a.ContainerID)
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("pod socket: %v", err)
	}
	if err := h.m.Check(context.Background(), a); err != nil {
		t.Errorf("CHECK after ADD: %v", err)
	}

	h.del(a)
	h.assertNothingLeft()
	if _, deleted := h.cp.counts(res.NodeID); deleted != 1 {
		t.Errorf("node deleted %d times, want 1", deleted)
	}
	// DEL is idempotent: again, and for a container never seen.
	h.del(a)
	h.del(Attachment{ContainerID: "never-seen", NetNS: "/run/netns/gone"})
	h.assertNothingLeft()
	if calls, _ := h.cp.counts(res.NodeID); calls != 1 {
		t.Errorf("DeleteDevice called %d times for the node, want 1", calls)
	}
}

func TestAddRepeated(t *testing.T) {
	h := newHarness(t)
	a := h.pod("web")
	first := h.add(a)
	// The runtime retries an ADD that timed out: the same answer, from
	// the same node.
	again := h.add(a)
	if again.NodeID != first.NodeID || h.be.started != 1 {
		t.Errorf("repeated ADD: node %s (was %s), %d backends started; want the same node, 1 start", again.NodeID, first.NodeID, h.be.started)
	}
	// A new sandbox in another netns replaces the attachment.
	b := a
	b.NetNS = "/run/netns/cni-web-2"
	h.net.addNetNS(b.NetNS)
	second := h.add(b)
	if second.NodeID == first.NodeID {
		t.Errorf("ADD in a new netns kept node %s", first.NodeID)
	}
	if got := h.cp.liveNodes(); !slices.Equal(got, []string{second.NodeID}) {
		t.Errorf("nodes after replacing = %v, want only %s", got, second.NodeID)
	}
	h.del(b)
	h.assertNothingLeft()
}

func TestAddFailureLeavesNothing(t *testing.T) {
	unreachable := errors.New("dial tcp 192.0.2.1:443: connect: connection refused")
	for _, tc := range []struct {
		name  string
		setup func(*harness, Attachment) Attachment
		code  uint32
		made  []string // what ADD made, in order, before it failed
	}{
		{
			name:  "no netns",
			setup: func(h *harness, a Attachment) Attachment { h.net.delNetNS(a.NetNS); return a },
			code:  cnierr.InvalidEnv,
		},
		{
			name:  "bad container ID",
			setup: func(h *harness, a Attachment) Attachment { a.ContainerID = "../etc"; return a },
			code:  cnierr.InvalidEnv,
		},
		{
			name:  "control plane not verified",
			setup: func(h *harness, a Attachment) Attachment { h.m.SetReady(unreachable); return a },
			code:  cnierr.TryAgainLater,
		},
		{
			name: "credentials refused",
			setup: func(h *harness, a Attachment) Attachment {
				h.m.SetReady(fmt.Errorf("control plane: %w", controlplane.ErrUnauthorized))
				return a
			},
			code: cnierr.ControlPlaneRefused,
		},
		{
			name: "saving the record",
			setup: func(h *harness, a Attachment) Attachment {
				// A file where the pod's state dir goes: even root cannot
				// make the dir.
				if err := os.WriteFile(PodDir(h.cfg.StateDir, a.ContainerID), nil, 0o600); err != nil {
					h.t.Fatal(err)
				}
				return a
			},
			code: cnierr.IOFailure,
		},
		{
			name: "policy routing",
			setup: func(h *harness, a Attachment) Attachment {
				h.net.fail["PrepareHost"] = errors.New("operation not permitted")
				return a
			},
			code: cnierr.Internal,
		},
		{
			name:  "auth key, control plane down",
			setup: func(h *harness, a Attachment) Attachment { h.cp.keyErr = unreachable; return a },
			code:  cnierr.TryAgainLater,
			made:  []string{"rules"},
		},
		{
			name:  "auth key refused",
			setup: func(h *harness, a Attachment) Attachment { h.cp.keyErr = controlplane.ErrUnauthorized; return a },
			code:  cnierr.ControlPlaneRefused,
			made:  []string{"rules"},
		},
		{
			name: "backend start",
			setup: func(h *harness, a Attachment) Attachment {
				h.be.setFail("Start", errors.New("creating TUN: busy"))
				return a
			},
			code: cnierr.Internal,
			made: []string{"rules"},
		},
		{
			name: "login refused",
			setup: func(h *harness, a Attachment) Attachment {
				h.be.setFail("Wait", fmt.Errorf("%w: invalid key", podbackend.ErrLoginFailed))
				return a
			},
			code: cnierr.ControlPlaneRefused,
			made: []string{"rules", "tun"},
		},
		{
			name: "node not up in time",
			setup: func(h *harness, a Attachment) Attachment {
				h.be.setFail("Wait", fmt.Errorf("node not running: %w", context.DeadlineExceeded))
				return a
			},
			code: cnierr.NodeNotReady,
			made: []string{"rules", "tun"},
		},
		{
			name: "wiring ts0",
			setup: func(h *harness, a Attachment) Attachment {
				h.net.fail["AttachPod"] = errors.New("file exists")
				return a
			},
			code: cnierr.Internal,
			made: []string{"rules", "tun", "node"},
		},
		{
			name: "reading ts0",
			setup: func(h *harness, a Attachment) Attachment {
				h.net.fail["PodMAC"] = errors.New("no such device")
				return a
			},
			code: cnierr.Internal,
			made: []string{"rules", "tun", "node", "veth"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := tc.setup(h, h.pod("web"))
			_, err := h.m.Add(context.Background(), a)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			if got := cnierr.CodeOf(err); got != tc.code {
				t.Errorf("ADD error code %d, want %d: %v", got, tc.code, err)
			}
			if got := h.made(); !slices.Equal(got, tc.made) {
				t.Errorf("ADD made %v before failing, want %v", got, tc.made)
			}
			h.assertNothingLeft()
		})
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*harness, Attachment) Attachment
		code  uint32 // 0: CHECK passes
	}{
		{"whole", func(h *harness, a Attachment) Attachment { return a }, 0},
		{"unknown container", func(h *harness, a Attachment) Attachment { a.ContainerID = "other"; return a }, cnierr.UnknownContainer},
		{"other netns", func(h *harness, a Attachment) Attachment {
			a.NetNS = "/run/netns/cni-other"
			h.net.addNetNS(a.NetNS)
			return a
		}, cnierr.InvalidEnv},
		{"netns gone", func(h *harness, a Attachment) Attachment { h.net.delNetNS(a.NetNS); return a }, cnierr.InvalidEnv},
		{"node not running", func(h *harness, a Attachment) Attachment { h.be.state = ipn.Starting; return a }, cnierr.NodeNotReady},
		{"ts0 changed", func(h *harness, a Attachment) Attachment {
			h.net.fail["Check"] = errors.New("ts0 lost 100.64.0.1")
			return a
		}, cnierr.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.pod("web")
			h.add(a)
			err := h.m.Check(context.Background(), tc.setup(h, a))
			if got := cnierr.CodeOf(err); err != nil && got != tc.code || err == nil && tc.code != 0 {
				t.Errorf("CHECK = %v (code %d), want code %d", err, got, tc.code)
			}
		})
	}
}

func TestAddressesChange(t *testing.T) {
	h := newHarness(t)
	a := h.pod("web")
	res := h.add(a)
	b := h.be.byTUN(podnet.NamesFor(a.ContainerID).TUN)
	moved := addrsFor(res.NodeID + "moved")
	b.cfg.OnAddrs(moved)
	rec, err := h.m.load(a.ContainerID)
	if err != nil || !slices.Equal(rec.Addrs, moved) {
		t.Errorf("record addresses after the node moved = %v, %v; want %v", rec.Addrs, err, moved)
	}
	if err := h.m.Check(context.Background(), a); err != nil {
		t.Errorf("CHECK after the node moved: %v", err)
	}
}

func TestRelayChange(t *testing.T) {
	h := newHarness(t)
	a := h.pod("web")
	h.add(a)
	b := h.be.byTUN(podnet.NamesFor(a.ContainerID).TUN)
	cli := h.m.bus.Client("test")
	defer cli.Close()
	pub := eventbus.Publish[netmon.ChangeDelta](cli)
	pub.Publish(netmon.ChangeDelta{}) // pod churn: not relayed
	pub.Publish(netmon.ChangeDelta{RebindLikelyRequired: true})
	deadline := time.Now().Add(10 * time.Second)
	for b.relays() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := b.relays(); n != 1 {
		t.Errorf("backend got %d changes relayed, want 1", n)
	}
}

// TestRecover restarts the daemon over pods in every state a record can
// be in: the live ones come back as the same nodes, the rest are removed
// with everything they had.
func TestRecover(t *testing.T) {
	h := newHarness(t)
	live1, live2, gone, deleting := h.pod("live-1"), h.pod("live-2"), h.pod("gone"), h.pod("deleting")
	r1, r2, rGone := h.add(live1), h.add(live2), h.add(gone)
	rDel := h.add(deleting)
	// DEL while the control plane is down: the record stays, Deleting.
	h.cp.setDown(true)
	h.del(deleting)
	h.cp.setDown(false)
	// An ADD that died half way: a record never Ready, its rules made.
	half := h.pod("half")
	halfRec := PodRecord{ContainerID: half.ContainerID, NetNS: half.NetNS, Table: podnet.TableBase + 7, Namespace: "default", Pod: "half"}
	if err := h.m.save(&halfRec); err != nil {
		t.Fatal(err)
	}
	h.net.create("rules", podnet.NamesFor(half.ContainerID).HostVeth)
	// Links of a container the daemon has no record of, and a socket dir
	// no pod serves.
	h.net.create("veth", podnet.NamesFor("lost").HostVeth)
	if err := os.MkdirAll(filepath.Join(h.cfg.RunDir, "pods", "default_lost"), 0o700); err != nil {
		t.Fatal(err)
	}

	h.m.Close() // backends stop; the kernel keeps veths and rules
	h.net.delNetNS(gone.NetNS)
	h.start()
	recovered, removed := h.m.Recover(context.Background())
	if recovered != 2 || removed < 4 {
		t.Errorf("Recover = %d recovered, %d removed; want 2, at least 4 (gone, deleting, half, lost link)", recovered, removed)
	}
	for _, tc := range []struct {
		a   Attachment
		was *Result
	}{{live1, r1}, {live2, r2}} {
		if err := h.m.Check(context.Background(), tc.a); err != nil {
			t.Errorf("CHECK %s after recovery: %v", tc.a.Pod, err)
		}
		res := h.add(tc.a) // a repeated ADD answers with what is there
		if res.NodeID != tc.was.NodeID || !slices.Equal(res.Addrs, tc.was.Addrs) {
			t.Errorf("%s came back as %s %v, was %s %v", tc.a.Pod, res.NodeID, res.Addrs, tc.was.NodeID, tc.was.Addrs)
		}
	}
	if got, want := h.cp.liveNodes(), []string{r1.NodeID, r2.NodeID}; !slices.Equal(got, want) {
		t.Errorf("nodes after recovery = %v, want %v (gone's %s and deleting's %s deleted)", got, want, rGone.NodeID, rDel.NodeID)
	}
	if got := entries(t, filepath.Join(h.cfg.StateDir, "pods")); !slices.Equal(got, []string{live1.ContainerID, live2.ContainerID}) {
		t.Errorf("pod state after recovery: %v", got)
	}
	if got := entries(t, filepath.Join(h.cfg.RunDir, "pods")); !slices.Equal(got, []string{"default_live-1", "default_live-2"}) {
		t.Errorf("socket dirs after recovery: %v", got)
	}
	for _, a := range []Attachment{gone, deleting, half} {
		n := podnet.NamesFor(a.ContainerID)
		for _, kind := range []string{"rules", "veth"} {
			if h.net.has(kind, n.HostVeth) {
				t.Errorf("%s's %s left after recovery", a.Pod, kind)
			}
		}
	}
	if h.net.has("veth", podnet.NamesFor("lost").HostVeth) {
		t.Error("a link of no pod survived the sweep")
	}

	h.del(live1)
	h.del(live2)
	h.assertNothingLeft()
}

// TestRecoverWaitsAtMostAddTimeout: a node that cannot come up does not
// hold the daemon's start beyond the ADD timeout, on the injected clock.
func TestRecoverWaitsAtMostAddTimeout(t *testing.T) {
	h := newHarness(t)
	a := h.pod("slow")
	h.add(a)
	h.restart()
	release := make(chan struct{})
	h.be.setFail("Start", nil)
	h.be.mu.Lock()
	h.be.block = release
	h.be.mu.Unlock()
	done := make(chan int)
	go func() {
		recovered, _ := h.m.Recover(context.Background())
		done <- recovered
	}()
	for {
		h.clock.Advance(h.cfg.AddTimeout)
		select {
		case n := <-done:
			if n != 0 {
				t.Errorf("Recover counted %d pods recovered while the node was still coming up", n)
			}
			close(release)
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestDefaultSocket: the daemon listens where the shim dials by default.
func TestDefaultSocket(t *testing.T) {
	if DefaultSocket != plugin.DefaultDaemonSocket {
		t.Errorf("daemon.DefaultSocket %q, shim's default %q", DefaultSocket, plugin.DefaultDaemonSocket)
	}
}
