package webui

import "time"

//go:generate go run ./cmd/gen-api-types

// This file holds every type the browser API sends or accepts as JSON.
// cmd/gen-api-types writes their TypeScript twins into
// frontend/src/api.gen.ts (make generate): rename a JSON field here and
// make check-generate fails until it is regenerated, and then the frontend
// fails to typecheck where it used the old name.
//
// A string type with constants of its own type becomes a union of those
// values in TypeScript, so declare each constant with its type. The
// tsunion/tskind tags make a struct a union by kind there (see
// internal/tsgen).

// PathKind is how traffic reaches a peer.
type PathKind string

// Paths, as a host's status reports them and as a ping takes them.
const (
	PathDirect    PathKind = "direct"
	PathDERP      PathKind = "derp"
	PathPeerRelay PathKind = "peer-relay"
	PathLocal     PathKind = "local"
	PathIdle      PathKind = "idle" // no traffic yet: the path is not known
)

// FanoutKind is what a fan-out calls from every host.
type FanoutKind string

// Fan-out kinds.
const (
	FanoutPing FanoutKind = "ping"
	FanoutDNS  FanoutKind = "dns"
)

// PingType is the kind of ping a ping fan-out sends.
type PingType string

// Ping types, as the adapter's PingType.
const (
	PingDisco   PingType = "disco"
	PingTSMP    PingType = "tsmp"
	PingICMP    PingType = "icmp"
	PingPeerAPI PingType = "peerapi"
)

// DNSType is a DNS record type a DNS fan-out may ask for.
type DNSType string

// DNS record types.
const (
	DNSTypeA     DNSType = "A"
	DNSTypeAAAA  DNSType = "AAAA"
	DNSTypeCNAME DNSType = "CNAME"
	DNSTypeMX    DNSType = "MX"
	DNSTypeNS    DNSType = "NS"
	DNSTypePTR   DNSType = "PTR"
	DNSTypeSOA   DNSType = "SOA"
	DNSTypeSRV   DNSType = "SRV"
	DNSTypeTXT   DNSType = "TXT"
)

// DetailKind is what GET /api/details?what= returns about a host.
type DetailKind string

// Detail kinds, each one adapter call.
const (
	DetailStatus   DetailKind = "status"
	DetailPrefs    DetailKind = "prefs"
	DetailDNS      DetailKind = "dns"
	DetailServe    DetailKind = "serve"
	DetailNetcheck DetailKind = "netcheck"
	DetailDERPMap  DetailKind = "derpmap"
	DetailTargets  DetailKind = "targets"
)

// Graph is the tailnet as the adapters see it: every device any of them
// sees (and every device the control plane lists), and one directed edge
// per (host, peer) with the path traffic takes now. Its slices are never
// nil: the browser reads them as arrays.
type Graph struct {
	Nodes       []GraphNode    `json:"nodes"`
	Edges       []GraphEdge    `json:"edges"`
	Hosts       []GraphHost    `json:"hosts"`
	Adapters    []AdapterState `json:"adapters"`
	Errors      []string       `json:"errors"`
	GeneratedAt time.Time      `json:"generatedAt"`
}

// GraphNode is one tailnet device.
type GraphNode struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"` // hostname
	DNSName   string    `json:"dnsName,omitempty"`
	OS        string    `json:"os,omitempty"`
	Version   string    `json:"version,omitempty"`
	User      string    `json:"user,omitempty"`
	Tags      []string  `json:"tags"`
	Addresses []string  `json:"addresses"`
	Online    bool      `json:"online"`
	Hosts     []string  `json:"hosts"`  // hosts (adapter targets) that are this node
	SeenBy    []string  `json:"seenBy"` // hosts that list it as a peer
	LastSeen  time.Time `json:"lastSeen,omitzero"`
}

// GraphEdge is host -> peer as the host sees it.
type GraphEdge struct {
	ID             string    `json:"id"`
	Source         string    `json:"source"` // node ID of the host
	Target         string    `json:"target"` // node ID of the peer
	Host           string    `json:"host"`   // host ID
	Path           PathKind  `json:"path"`   // direct, derp, peer-relay or idle
	CurrentAddress string    `json:"currentAddress,omitempty"`
	PeerRelay      string    `json:"peerRelay,omitempty"`
	DERPRegion     string    `json:"derpRegion,omitempty"`
	Active         bool      `json:"active"`
	Online         bool      `json:"online"`
	RxBytes        int64     `json:"rxBytes"`
	TxBytes        int64     `json:"txBytes"`
	LastHandshake  time.Time `json:"lastHandshake,omitzero"`
}

// GraphHost is a host: an adapter target and the node it is.
type GraphHost struct {
	ID      string `json:"id"`
	NodeID  string `json:"nodeId,omitempty"`
	Name    string `json:"name"`
	Adapter string `json:"adapter"`
	Target  string `json:"target"`
	Version string `json:"version,omitempty"`
	State   string `json:"state,omitempty"`
	Error   string `json:"error,omitempty"`
}

// AdapterState is one adapter and what it said, for the graph.
type AdapterState struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Online  bool   `json:"online"`
	Error   string `json:"error,omitempty"`
	Targets int    `json:"targets"`
}

// Caller is who made a request (GET /api/me).
type Caller struct {
	Login    string   `json:"login,omitempty"`
	Display  string   `json:"display,omitempty"`
	Node     string   `json:"node,omitempty"`
	NodeID   string   `json:"nodeId,omitempty"`
	Tags     []string `json:"tags,omitempty"`
	Dev      bool     `json:"dev,omitempty"` // dev mode: nobody is identified
	Allowed  bool     `json:"allowed"`
	Reason   string   `json:"reason,omitempty"`
	Required []string `json:"allowedUsers,omitempty"`
}

// FanoutRequest is one call made from many hosts at once (POST
// /api/fanouts).
type FanoutRequest struct {
	Kind  FanoutKind `json:"kind" tsunion:"ping=PingRequest,dns=DNSRequest"`
	Hosts []string   `json:"hosts,omitempty"` // host IDs to call from; every host when empty
	// Ping: which peers (node IDs); every peer of each host when empty.
	Peers          []string `json:"peers,omitempty" tskind:"ping"`
	PingType       PingType `json:"pingType,omitempty" tskind:"ping"` // disco when empty
	Count          int      `json:"count,omitempty" tskind:"ping"`    // pings per pair; 1 when zero
	IncludeOffline bool     `json:"includeOffline,omitempty" tskind:"ping"`
	// DNS: the name and record type to resolve from every host.
	DNSName string  `json:"dnsName,omitempty" tskind:"dns"`
	DNSType DNSType `json:"dnsType,omitempty" tskind:"dns"` // A when empty
	// TimeoutMS is the deadline of each call; 5000 when zero.
	TimeoutMS int `json:"timeoutMs,omitempty"`
	// Concurrency bounds calls in flight in total; 64 when zero.
	Concurrency int `json:"concurrency,omitempty"`
	// PerHost bounds calls in flight per host; 8 when zero.
	PerHost int `json:"perHost,omitempty"`
}

// Result is one call's outcome. Kind is its fan-out's: a ping result
// carries only the common and the ping fields, a DNS result the common and
// the DNS ones.
type Result struct {
	Kind      FanoutKind `json:"kind" tsunion:"ping=PingResult,dns=DNSResult"`
	Seq       int        `json:"seq"` // order of arrival, from 1
	Host      string     `json:"host"`
	HostNode  string     `json:"hostNode"`
	HostName  string     `json:"hostName"`
	Adapter   string     `json:"adapter"`
	OK        bool       `json:"ok"`
	Error     string     `json:"error,omitempty"`
	Code      string     `json:"code,omitempty"` // gRPC code of the error
	Millis    float64    `json:"ms"`             // the call's own duration
	StartedAt string     `json:"startedAt"`

	Peer       string   `json:"peer,omitempty" tskind:"ping"` // node ID
	PeerName   string   `json:"peerName,omitempty" tskind:"ping"`
	PeerIP     string   `json:"peerIp,omitempty" tskind:"ping"`
	PingType   PingType `json:"pingType,omitempty" tskind:"ping"`
	LatencyMS  float64  `json:"latencyMs,omitempty" tskind:"ping"` // average over successful pings
	Path       PathKind `json:"path,omitempty" tskind:"ping"`      // direct, derp, peer-relay, local
	Endpoint   string   `json:"endpoint,omitempty" tskind:"ping"`
	DERPRegion string   `json:"derpRegion,omitempty" tskind:"ping"`
	PeerRelay  string   `json:"peerRelay,omitempty" tskind:"ping"`
	Sent       int      `json:"sent,omitempty" tskind:"ping"`
	Received   int      `json:"received,omitempty" tskind:"ping"`

	DNSName string   `json:"dnsName,omitempty" tskind:"dns"`
	Rcode   string   `json:"rcode,omitempty" tskind:"dns"`
	Answers []string `json:"answers,omitempty" tskind:"dns"`
}

// FanoutState is a fan-out as JSON.
type FanoutState struct {
	ID        string        `json:"id"`
	Request   FanoutRequest `json:"request"`
	Total     int           `json:"total"`
	Completed int           `json:"completed"`
	Failed    int           `json:"failed"`
	Done      bool          `json:"done"`
	Canceled  bool          `json:"canceled"`
	Started   time.Time     `json:"started"`
	ElapsedMS float64       `json:"elapsedMs"`
	Results   []Result      `json:"results,omitempty"`
}
