package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"tsymbiote.dhouti.dev/cni/internal/cnierr"
	"tsymbiote.dhouti.dev/cni/internal/podmeta"
	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/proto/contract"
)

// fakePods is the API server's pods: annotations by "namespace/name".
type fakePods struct {
	mu   sync.Mutex
	ann  map[string]map[string]string
	fail error
}

func (f *fakePods) Annotations(_ context.Context, namespace, name string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	a, ok := f.ann[namespace+"/"+name]
	if !ok {
		return nil, fmt.Errorf("pod %s/%s: %w", namespace, name, podmeta.ErrNoPod)
	}
	return a, nil
}

// policyCP is the fake control plane with a tailnet policy to read, and a
// record of the tags each key was minted with.
type policyCP struct {
	*fakeCP
	policy string
	mu     sync.Mutex
	tags   [][]string
}

func (c *policyCP) GetPolicy(context.Context) (*controlplane.Policy, error) {
	return &controlplane.Policy{Body: c.policy}, nil
}

func (c *policyCP) CreateAuthKey(ctx context.Context, req controlplane.AuthKeyRequest) (*controlplane.AuthKey, error) {
	c.mu.Lock()
	c.tags = append(c.tags, req.Tags)
	c.mu.Unlock()
	return c.fakeCP.CreateAuthKey(ctx, req)
}

func newPodsHarness(t *testing.T, ann map[string]map[string]string) (*harness, *policyCP) {
	t.Helper()
	h := newHarness(t)
	cp := &policyCP{fakeCP: h.cp, policy: `{"tagOwners": {"tag:k8s-pod": [], "tag:web": [],}}`}
	h.pods, h.ctrl = &fakePods{ann: ann}, cp
	h.restart()
	return h, cp
}

func TestAnnotations(t *testing.T) {
	h, cp := newPodsHarness(t, map[string]map[string]string{
		"default/web":     {contract.AnnotationTags: "tag:web", contract.AnnotationHostname: "web-1"},
		"default/plain":   {},
		"default/refused": {contract.AnnotationTags: "tag:web,tag:nobody"},
		"default/bad":     {contract.AnnotationHostname: "Not_A_Label"},
	})
	web := h.pod("web")
	res := h.add(web)
	if res.Hostname != "web-1" {
		t.Errorf("web's hostname = %q, want web-1", res.Hostname)
	}
	plain := h.pod("plain")
	if res := h.add(plain); res.Hostname != "k8s-default-plain" {
		t.Errorf("plain's hostname = %q, want the derived one", res.Hostname)
	}
	// A sandbox the API server does not know gets the defaults too.
	if res := h.add(h.pod("unknown")); res.Hostname != "k8s-default-unknown" {
		t.Errorf("unknown's hostname = %q", res.Hostname)
	}
	cp.mu.Lock()
	if want := [][]string{{"tag:web"}, {contract.TagPod}, {contract.TagPod}}; !slices.EqualFunc(cp.tags, want, slices.Equal) {
		t.Errorf("keys minted with tags %v, want %v", cp.tags, want)
	}
	cp.mu.Unlock()

	made := len(h.made())
	for _, tc := range []struct{ pod, want string }{
		{"refused", "tag tag:nobody from pod default/refused's annotation tailscale.com/tags is not in the tailnet policy's tagOwners"},
		{"bad", `annotation tailscale.com/hostname: "Not_A_Label"`},
	} {
		_, err := h.m.Add(context.Background(), h.pod(tc.pod))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ADD %s: %v, want an error with %q", tc.pod, err, tc.want)
		}
	}
	if n := len(h.made()); n > made+1 { // refused: its rules, then undone
		t.Errorf("refused ADDs made %v", h.made()[made:])
	}
	h.del(web)
	h.del(plain)
	h.del(Attachment{ContainerID: "c0ffeeunknown", NetNS: "/run/netns/cni-unknown"})
	h.assertNothingLeft()

	// The API server cannot answer: try again later, nothing made.
	h.pods.(*fakePods).fail = errors.New("connection refused")
	_, err := h.m.Add(context.Background(), h.pod("web"))
	if cnierr.CodeOf(err) != cnierr.TryAgainLater {
		t.Errorf("ADD with the API server down: %v, want try again later", err)
	}
	h.assertNothingLeft()
}

func TestOptOut(t *testing.T) {
	h, _ := newPodsHarness(t, map[string]map[string]string{"default/out": {contract.AnnotationCNI: "false"}})
	a := h.pod("out")
	res := h.add(a)
	if res.Interface != "" || len(res.Addrs) != 0 {
		t.Fatalf("opted-out ADD = %+v, want nothing", res)
	}
	if got := h.made(); len(got) != 0 {
		t.Fatalf("opted-out ADD made %v", got)
	}
	if err := h.m.Check(context.Background(), a); err != nil || !h.m.OptedOut(a.ContainerID) {
		t.Fatalf("CHECK of the opted-out pod: %v (opted out %v)", err, h.m.OptedOut(a.ContainerID))
	}
	// A repeated ADD answers the same; a restart keeps knowing.
	if res := h.add(a); res.Interface != "" {
		t.Fatalf("repeated ADD = %+v", res)
	}
	h.restart()
	if rec, removed := h.m.Recover(context.Background()); rec != 0 || removed != 0 {
		t.Errorf("Recover = %d recovered, %d removed; want the opted-out pod kept as it is", rec, removed)
	}
	if !h.m.OptedOut(a.ContainerID) || h.be.liveCount() != 0 {
		t.Fatalf("after restart: opted out %v, %d backends", h.m.OptedOut(a.ContainerID), h.be.liveCount())
	}
	h.del(a)
	h.assertNothingLeft()
}

func TestGC(t *testing.T) {
	h := newHarness(t)
	live, killed, other := h.pod("live"), h.pod("killed"), h.pod("other")
	live.Network, killed.Network, other.Network = "net", "net", "another"
	h.add(live)
	h.add(killed)
	ores := h.add(other)
	n, err := h.m.GC(context.Background(), "net", []Attachment{{ContainerID: live.ContainerID, IfName: "eth0"}})
	if err != nil || n != 1 {
		t.Fatalf("GC = %d, %v; want 1 removed", n, err)
	}
	if h.m.podByID(killed.ContainerID) != nil || h.m.podByID(live.ContainerID) == nil || h.m.podByID(other.ContainerID) == nil {
		t.Fatal("GC removed the wrong pods")
	}
	if err := h.m.Check(context.Background(), live); err != nil {
		t.Errorf("CHECK live after GC: %v", err)
	}
	// The same attachment under another ifname is another attachment.
	if n, _ := h.m.GC(context.Background(), "net", []Attachment{{ContainerID: live.ContainerID, IfName: "net1"}}); n != 1 {
		t.Errorf("GC without live's (ID, ifname) removed %d, want 1", n)
	}
	if _, err := h.m.GC(context.Background(), "", nil); cnierr.CodeOf(err) != cnierr.InvalidNetConf {
		t.Errorf("GC without a network: %v", err)
	}
	if _, err := h.m.GC(context.Background(), "net", []Attachment{{ContainerID: "../x"}}); cnierr.CodeOf(err) != cnierr.InvalidNetConf {
		t.Errorf("GC with a bad container ID: %v", err)
	}
	if n, _ := h.m.GC(context.Background(), "another", nil); n != 1 || slices.Contains(h.cp.liveNodes(), ores.NodeID) {
		t.Errorf("GC of another network removed %d", n)
	}
	h.assertNothingLeft()
}

func TestSweepGone(t *testing.T) {
	h := newHarness(t)
	keep, gone := h.pod("keep"), h.pod("gone")
	h.add(keep)
	h.add(gone)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { h.m.SweepGone(ctx, DefaultSweepInterval) })
	defer wg.Wait()
	defer cancel()
	h.net.delNetNS(gone.NetNS)
	h.tickUntil(DefaultSweepInterval, func() bool { return h.m.podByID(gone.ContainerID) == nil })
	if h.m.podByID(keep.ContainerID) == nil {
		t.Fatal("sweep removed a pod whose netns is there")
	}
	if got := len(h.cp.liveNodes()); got != 1 {
		t.Errorf("%d nodes left, want keep's", got)
	}
	h.del(keep)
	h.assertNothingLeft()
}
