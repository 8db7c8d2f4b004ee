package webui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"tailscale.com/types/logger"
	"tsymbiote.dhouti.dev/controlplane"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
	"tsymbiote.dhouti.dev/webui/frontend"
)

// Server is the WebUI's HTTP side.
type Server struct {
	logf     logger.Logf
	reg      *Registry
	cp       controlplane.Client // for the device list; may be nil
	gate     *gate
	metrics  *metrics
	fanouts  *fanouts
	base     context.Context // bounds fan-outs and streams
	timeout  time.Duration
	assets   fs.FS
	hasAsset bool
	// access serves /api/access when the WebUI runs with --access.
	access *accessAPI

	// lastHosts is the last snapshot's hosts, so that a fan-out started
	// right after the graph loaded pings what the user saw.
	mu        sync.Mutex
	lastHosts []HostState
	lastAt    time.Time
}

// NewServer returns the HTTP side. base bounds the fan-outs and streams it
// starts; cancel it to stop them all.
func NewServer(base context.Context, logf logger.Logf, reg *Registry, cp controlplane.Client, g *gate, m *metrics, timeout time.Duration) *Server {
	assets, ok := frontend.Assets()
	return &Server{logf: logf, reg: reg, cp: cp, gate: g, metrics: m, fanouts: newFanouts(), base: base, timeout: timeout, assets: assets, hasAsset: ok}
}

// enableAccess serves the access API from store; call it before Handler.
func (s *Server) enableAccess(store AccessStore, now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	s.access = &accessAPI{logf: s.logf, store: store, now: now}
	if s.cp != nil {
		cp := s.cp
		s.access.policy = func(ctx context.Context) ([]byte, error) {
			p, err := cp.GetPolicy(ctx)
			if err != nil {
				return nil, err
			}
			return []byte(p.Body), nil
		}
	}
}

// Handler returns the routes, behind the --allowed-users gate except for
// /healthz, and every state-changing one behind csrfProtect.
func (s *Server) Handler() http.Handler {
	api := http.NewServeMux()
	api.HandleFunc("GET /api/graph", s.handleGraph)
	api.HandleFunc("GET /api/me", s.handleMe)
	api.HandleFunc("POST /api/fanouts", s.handleStartFanout)
	api.HandleFunc("GET /api/fanouts/{id}", s.handleFanout)
	api.HandleFunc("GET /api/fanouts/{id}/events", s.handleFanoutEvents)
	api.HandleFunc("POST /api/fanouts/{id}/cancel", s.handleCancel)
	api.HandleFunc("DELETE /api/fanouts/{id}", s.handleCancel)
	api.HandleFunc("GET /api/details", s.handleDetails)
	api.HandleFunc("GET /api/logs", s.handleLogs)
	if s.access != nil {
		s.access.register(api)
	} else {
		accessOff(api)
	}
	api.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no API %s %s", r.Method, r.URL.Path))
	})
	api.Handle("GET /metrics", promHandler(s.metrics))
	api.HandleFunc("/", s.handleAssets)

	root := http.NewServeMux()
	root.HandleFunc("GET /healthz", s.handleHealth)
	root.Handle("/", s.gate.middleware(s.metrics, api))
	return csrfProtect(root)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	// A write error means the client went away; nothing to tell it.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// snapshot fetches every host's status and remembers it for fan-outs.
func (s *Server) snapshot(ctx context.Context) ([]AdapterState, []HostState, error) {
	s.reg.freshen(ctx, 5*time.Second)
	adapters, hosts, err := s.reg.Snapshot(ctx)
	s.mu.Lock()
	s.lastHosts, s.lastAt = hosts, time.Now()
	s.mu.Unlock()
	return adapters, hosts, err
}

func (s *Server) handleGraph(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	if r.URL.Query().Get("refresh") != "" {
		if err := s.reg.Refresh(ctx); err != nil {
			s.logf("refreshing adapters: %v", err)
		}
	}
	var (
		devices []controlplane.Device
		devErr  error
		wg      sync.WaitGroup
	)
	if s.cp != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			devices, devErr = s.cp.ListDevices(ctx, controlplane.ListOptions{})
		}()
	}
	adapters, hosts, discErr := s.snapshot(ctx)
	wg.Wait()
	g := BuildGraph(adapters, hosts, devices, time.Now())
	if discErr != nil {
		g.Errors = append(g.Errors, "discovering adapters: "+discErr.Error())
	}
	if devErr != nil {
		g.Errors = append(g.Errors, "listing devices: "+devErr.Error())
	}
	writeJSON(w, http.StatusOK, g)
}

func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) {
	c, _ := r.Context().Value(callerKey{}).(Caller)
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	adapters, _ := s.reg.list()
	s.reg.mu.Lock()
	lastErr, fresh := s.reg.lastErr, s.reg.lastFresh
	s.reg.mu.Unlock()
	out := map[string]any{"ok": lastErr == nil, "adapters": len(adapters), "frontend": s.hasAsset}
	if !fresh.IsZero() {
		out["lastDiscovery"] = fresh.UTC().Format(time.RFC3339)
	}
	code := http.StatusOK
	if lastErr != nil {
		out["error"] = lastErr.Error()
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, out)
}

// maxBody bounds request bodies; a fan-out request is a few KiB at most.
const maxBody = 1 << 20

func (s *Server) handleStartFanout(w http.ResponseWriter, r *http.Request) {
	var req FanoutRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("fan-out request: %w", err))
		return
	}
	// Use the hosts the user just saw when fresh; a fan-out should ping
	// the graph on the screen, and re-asking every adapter costs a round.
	s.mu.Lock()
	hosts, at := s.lastHosts, s.lastAt
	s.mu.Unlock()
	if time.Since(at) > 10*time.Second || hosts == nil {
		ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
		var err error
		_, hosts, err = s.snapshot(ctx)
		cancel()
		if err != nil && len(hosts) == 0 {
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
	}
	f, err := startFanout(s.base, req, hosts, s.metrics)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	s.fanouts.add(f)
	s.logf("fan-out %s: %s, %d calls from %d hosts", f.ID, f.Request.Kind, f.Total, f.Hosts)
	writeJSON(w, http.StatusAccepted, f.State(false))
}

func (s *Server) fanout(w http.ResponseWriter, r *http.Request) *Fanout {
	f := s.fanouts.get(r.PathValue("id"))
	if f == nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("fan-out %q: unknown or expired", r.PathValue("id")))
	}
	return f
}

func (s *Server) handleFanout(w http.ResponseWriter, r *http.Request) {
	if f := s.fanout(w, r); f != nil {
		writeJSON(w, http.StatusOK, f.State(true))
	}
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	if f := s.fanout(w, r); f != nil {
		f.Cancel()
		writeJSON(w, http.StatusOK, f.State(false))
	}
}

// sse writes server-sent events.
type sse struct {
	w http.ResponseWriter
	f http.Flusher
}

func newSSE(w http.ResponseWriter) (*sse, error) {
	f, ok := w.(http.Flusher)
	if !ok {
		return nil, errors.New("streaming unsupported")
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	f.Flush()
	return &sse{w: w, f: f}, nil
}

func (e *sse) send(event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(e.w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return err
	}
	return nil
}

func (e *sse) flush() { e.f.Flush() }

// maxBatch bounds the results in one "results" event: a browser parses
// an event in one go, and 1,000 results are about 400 kB of JSON.
const maxBatch = 1000

// handleFanoutEvents streams "start", then every "result" (from the first,
// so a late reader misses nothing), then "done". Results that arrive
// together go out in one write. With ?batch=1 they go out as "results"
// events, each a JSON array of up to maxBatch results: the page then
// parses one event where it would parse hundreds.
func (s *Server) handleFanoutEvents(w http.ResponseWriter, r *http.Request) {
	f := s.fanout(w, r)
	if f == nil {
		return
	}
	batch := r.URL.Query().Get("batch") == "1"
	ev, err := newSSE(w)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if ev.send("start", f.State(false)) != nil {
		return
	}
	ev.flush()
	next := 0
	for {
		rs, done, changed := f.since(next)
		for i := 0; batch && i < len(rs); i += maxBatch {
			if ev.send("results", rs[i:min(i+maxBatch, len(rs))]) != nil {
				return
			}
		}
		for _, res := range rs {
			if !batch && ev.send("result", res) != nil {
				return
			}
		}
		next += len(rs)
		if done {
			if ev.send("done", f.State(false)) == nil {
				ev.flush()
			}
			return
		}
		ev.flush()
		select {
		case <-changed:
			// Let a burst of results gather into one write.
			time.Sleep(15 * time.Millisecond)
		case <-r.Context().Done():
			return
		}
	}
}

var detailKinds = []DetailKind{DetailStatus, DetailPrefs, DetailDNS, DetailServe, DetailNetcheck, DetailDERPMap, DetailTargets}

func (s *Server) handleDetails(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	h, err := s.reg.host(q.Get("host"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	what := DetailKind(q.Get("what"))
	timeout := s.timeout
	if what == DetailNetcheck {
		timeout = max(timeout, 30*time.Second) // netcheck waits for slow probes
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	var res proto.Message
	switch what {
	case DetailStatus:
		res, err = h.client.Status(ctx, &adapterv1.StatusRequest{Target: h.Target})
	case DetailPrefs:
		res, err = h.client.Prefs(ctx, &adapterv1.PrefsRequest{Target: h.Target})
	case DetailDNS:
		res, err = h.client.DNSConfig(ctx, &adapterv1.DNSConfigRequest{Target: h.Target})
	case DetailServe:
		res, err = h.client.ServeConfig(ctx, &adapterv1.ServeConfigRequest{Target: h.Target})
	case DetailNetcheck:
		res, err = h.client.Netcheck(ctx, &adapterv1.NetcheckRequest{Target: h.Target})
	case DetailDERPMap:
		res, err = h.client.DERPMap(ctx, &adapterv1.DERPMapRequest{Target: h.Target})
	case DetailTargets:
		res, err = h.client.ListTargets(ctx, &adapterv1.ListTargetsRequest{})
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("what %q: want one of %v", what, detailKinds))
		return
	}
	if err != nil {
		writeError(w, httpCode(err), fmt.Errorf("%s of %s via %s: %s", what, h.Target, h.Adapter, status.Convert(err).Message()))
		return
	}
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(res)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// httpCode maps an adapter's gRPC error to the HTTP status the browser sees.
func httpCode(err error) int {
	switch status.Code(err) {
	case codes.NotFound:
		return http.StatusNotFound
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// handleLogs streams a host's log lines as "line" events until the browser
// goes away or the stream ends ("end" with the reason).
func (s *Server) handleLogs(w http.ResponseWriter, r *http.Request) {
	h, err := s.reg.host(r.URL.Query().Get("host"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.base, cancel)
	defer stop()
	st, err := h.client.StreamLogs(ctx, &adapterv1.StreamLogsRequest{Target: h.Target})
	if err != nil {
		writeError(w, httpCode(err), fmt.Errorf("logs of %s: %s", h.Target, status.Convert(err).Message()))
		return
	}
	ev, err := newSSE(w)
	if err != nil {
		return
	}
	for {
		m, err := st.Recv()
		if err != nil {
			if ctx.Err() == nil && ev.send("end", map[string]string{"error": status.Convert(err).Message()}) == nil {
				ev.flush()
			}
			return
		}
		if ev.send("line", map[string]string{"line": m.GetLine(), "time": m.GetTime().AsTime().Format(time.RFC3339Nano)}) != nil {
			return
		}
		ev.flush()
	}
}

func (s *Server) handleAssets(w http.ResponseWriter, r *http.Request) {
	if !s.hasAsset {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, frontend.Placeholder)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	if p == "" {
		p = "index.html"
	}
	if _, err := fs.Stat(s.assets, p); err != nil {
		// Client-side routes fall back to the app.
		p = "index.html"
	}
	if strings.HasPrefix(p, "assets/") {
		// Vite puts content hashes in these names.
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	http.ServeFileFS(w, r, s.assets, p)
}
