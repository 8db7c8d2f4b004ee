package webui

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/proto/contract"
)

// AdapterClient is what the WebUI needs from an adapter: its generated gRPC
// client. Tests substitute fakes.
type AdapterClient = adapterv1.AdapterServiceClient

// Endpoint is an adapter to call: where it is and who it is.
type Endpoint struct {
	ID     string // stable node ID, or the address for --adapter
	Name   string // device name
	Addr   string // host:port
	Online bool   // as the control plane says; true for --adapter
}

// Discoverer lists the adapters.
type Discoverer interface {
	Discover(ctx context.Context) ([]Endpoint, error)
}

// controlPlaneDiscoverer finds adapters as the devices carrying
// contract.TagAdapter.
type controlPlaneDiscoverer struct {
	cp   controlplane.Client
	port string
}

func (d *controlPlaneDiscoverer) Discover(ctx context.Context) ([]Endpoint, error) {
	devs, err := d.cp.ListDevices(ctx, controlplane.ListOptions{Tag: contract.TagAdapter})
	if err != nil {
		return nil, fmt.Errorf("listing %s devices: %w", contract.TagAdapter, err)
	}
	var out []Endpoint
	for _, dev := range devs {
		if len(dev.Addresses) == 0 {
			continue
		}
		out = append(out, Endpoint{
			ID:     dev.ID,
			Name:   dev.Name,
			Addr:   net.JoinHostPort(dev.Addresses[0].String(), d.port),
			Online: dev.Online,
		})
	}
	return out, nil
}

// staticDiscoverer is --adapter.
type staticDiscoverer []string

func (s staticDiscoverer) Discover(context.Context) ([]Endpoint, error) {
	var out []Endpoint
	for _, a := range s {
		out = append(out, Endpoint{ID: a, Name: a, Addr: a, Online: true})
	}
	return out, nil
}

// DialFunc opens a connection to an adapter: over the tailnet normally,
// over the host network for --adapter.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// adapter is one connected adapter.
type adapter struct {
	Endpoint
	conn   *grpc.ClientConn // nil for injected clients
	client AdapterClient
}

// Host is one tailscaled daemon that an adapter answers for: the unit that
// pings and is pinged from.
type Host struct {
	ID        string // adapter ID and target, joined by hostIDSep
	AdapterID string
	Adapter   string // adapter name
	Target    string
	client    AdapterClient
}

const hostIDSep = "|"

func hostID(adapterID, target string) string { return adapterID + hostIDSep + target }

// Registry keeps the set of adapters current and fetches their hosts'
// statuses.
type Registry struct {
	logf    logger.Logf
	disc    Discoverer
	dial    DialFunc
	metrics *metrics
	timeout time.Duration // per call

	// newClient connects to an endpoint; tests replace it.
	newClient func(ep Endpoint) (*grpc.ClientConn, AdapterClient, error)

	mu        sync.Mutex
	adapters  map[string]*adapter // by ID
	lastErr   error               // of the last discovery
	lastFresh time.Time
}

// NewRegistry returns a Registry that discovers with disc and dials with
// dial.
func NewRegistry(logf logger.Logf, disc Discoverer, dial DialFunc, m *metrics, timeout time.Duration) *Registry {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	r := &Registry{logf: logf, disc: disc, dial: dial, metrics: m, timeout: timeout, adapters: map[string]*adapter{}}
	r.newClient = r.grpcClient
	return r
}

func (r *Registry) grpcClient(ep Endpoint) (*grpc.ClientConn, AdapterClient, error) {
	opts := []grpc.DialOption{
		// The tailnet is the transport's security: WireGuard encrypts and
		// the adapter identifies the caller by its tailnet address.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return r.dial(ctx, "tcp", addr)
		}),
	}
	if r.metrics != nil {
		opts = append(opts,
			grpc.WithChainUnaryInterceptor(r.metrics.unaryClient(ep.Name)),
			grpc.WithChainStreamInterceptor(r.metrics.streamClient(ep.Name)))
	}
	cc, err := grpc.NewClient("passthrough:///"+ep.Addr, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("adapter %s at %s: %w", ep.Name, ep.Addr, err)
	}
	return cc, adapterv1.NewAdapterServiceClient(cc), nil
}

// Refresh re-lists the adapters, connecting new ones and dropping those
// that left.
func (r *Registry) Refresh(ctx context.Context) error {
	eps, err := r.disc.Discover(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr = err
	if err != nil {
		return err
	}
	r.lastFresh = time.Now()
	seen := map[string]bool{}
	for _, ep := range eps {
		seen[ep.ID] = true
		if a, ok := r.adapters[ep.ID]; ok {
			if a.Addr == ep.Addr {
				a.Endpoint = ep
				continue
			}
			a.close()
		}
		cc, cl, err := r.newClient(ep)
		if err != nil {
			r.logf("%v", err)
			continue
		}
		r.logf("adapter %s (%s) at %s", ep.Name, ep.ID, ep.Addr)
		r.adapters[ep.ID] = &adapter{Endpoint: ep, conn: cc, client: cl}
	}
	for id, a := range r.adapters {
		if !seen[id] {
			r.logf("adapter %s (%s) left", a.Name, id)
			a.close()
			delete(r.adapters, id)
		}
	}
	if r.metrics != nil {
		r.metrics.adapters.Set(float64(len(r.adapters)))
	}
	return nil
}

func (a *adapter) close() {
	if a.conn != nil {
		a.conn.Close()
	}
}

// Close disconnects every adapter.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, a := range r.adapters {
		a.close()
		delete(r.adapters, id)
	}
}

// Loop refreshes every interval until ctx ends.
func (r *Registry) Loop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, r.timeout)
			if err := r.Refresh(rctx); err != nil && ctx.Err() == nil {
				r.logf("refreshing adapters: %v", err)
			}
			cancel()
		}
	}
}

// freshen refreshes when the last discovery is older than maxAge.
func (r *Registry) freshen(ctx context.Context, maxAge time.Duration) {
	r.mu.Lock()
	stale := time.Since(r.lastFresh) > maxAge
	r.mu.Unlock()
	if stale {
		if err := r.Refresh(ctx); err != nil {
			r.logf("refreshing adapters: %v", err)
		}
	}
}

// list returns copies of the adapters: Refresh updates their endpoints in
// place under r.mu while callers read them without it.
func (r *Registry) list() ([]*adapter, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*adapter, 0, len(r.adapters))
	for _, a := range r.adapters {
		c := *a
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Name < out[j].Name || out[i].Name == out[j].Name && out[i].ID < out[j].ID
	})
	return out, r.lastErr
}

// HostState is a host and its status, or why there is none.
type HostState struct {
	Host
	Status *adapterv1.StatusResponse
	Err    error
}

// Snapshot asks every adapter for its targets and every target for its
// status, concurrently.
func (r *Registry) Snapshot(ctx context.Context) ([]AdapterState, []HostState, error) {
	adapters, discErr := r.list()
	var (
		mu     sync.Mutex
		states = make([]AdapterState, len(adapters))
		hosts  []HostState
		wg     sync.WaitGroup
	)
	for i, a := range adapters {
		states[i] = AdapterState{ID: a.ID, Name: a.Name, Addr: a.Addr, Online: a.Online}
		if !a.Online {
			// Asking would only wait out the deadline.
			states[i].Error = "offline according to the control plane"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hs, err := r.adapterHosts(ctx, a)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				states[i].Error = err.Error()
			}
			states[i].Targets = len(hs)
			hosts = append(hosts, hs...)
		}()
	}
	wg.Wait()
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].ID < hosts[j].ID })
	return states, hosts, discErr
}

func (r *Registry) adapterHosts(ctx context.Context, a *adapter) ([]HostState, error) {
	// One slow adapter must not hold up the whole graph for long.
	cctx, cancel := context.WithTimeout(ctx, min(r.timeout, 5*time.Second))
	defer cancel()
	lt, err := a.client.ListTargets(cctx, &adapterv1.ListTargetsRequest{})
	if err != nil {
		return nil, fmt.Errorf("listing targets: %w", err)
	}
	var (
		out []HostState
		mu  sync.Mutex
		wg  sync.WaitGroup
	)
	for _, tg := range lt.Targets {
		h := Host{ID: hostID(a.ID, tg.Name), AdapterID: a.ID, Adapter: a.Name, Target: tg.Name, client: a.client}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := a.client.Status(cctx, &adapterv1.StatusRequest{Target: tg.Name})
			mu.Lock()
			out = append(out, HostState{Host: h, Status: st, Err: err})
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, nil
}

// host finds a host by ID without asking its adapter anything.
func (r *Registry) host(id string) (Host, error) {
	adapterID, target, ok := strings.Cut(id, hostIDSep)
	if !ok {
		return Host{}, fmt.Errorf("host %q: want adapter%starget", id, hostIDSep)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.adapters[adapterID]
	if a == nil {
		return Host{}, fmt.Errorf("host %q: %w", id, errUnknownAdapter)
	}
	return Host{ID: id, AdapterID: adapterID, Adapter: a.Name, Target: target, client: a.client}, nil
}

var errUnknownAdapter = errors.New("no such adapter (gone, or not discovered yet)")

// hostsByID filters hs to ids, keeping order; all of them when ids is empty.
func hostsByID(hs []HostState, ids []string) ([]HostState, error) {
	if len(ids) == 0 {
		return hs, nil
	}
	var out []HostState
	for _, id := range ids {
		i := slices.IndexFunc(hs, func(h HostState) bool { return h.ID == id })
		if i < 0 {
			return nil, fmt.Errorf("hosts: %q is not a known host", id)
		}
		out = append(out, hs[i])
	}
	return out, nil
}
