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
	// Concurrency bounds calls in flight in total; 4096 when zero.
	Concurrency int `json:"concurrency,omitempty"`
	// PerHost bounds calls in flight per host; 16 when zero.
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

// AccessPhase is where an access request stands.
type AccessPhase string

// Access request phases, from asking to the end of the grant.
const (
	AccessPending  AccessPhase = "Pending"  // waiting for an approver
	AccessApproved AccessPhase = "Approved" // approved; the grant is being written to the policy
	AccessActive   AccessPhase = "Active"   // the requester is in the group until expiresAt
	AccessDenied   AccessPhase = "Denied"
	AccessExpired  AccessPhase = "Expired" // the grant ran out and was taken back
	AccessRevoked  AccessPhase = "Revoked" // taken back before its end
	AccessFailed   AccessPhase = "Failed"  // refused by the operator (see message)
)

// AccessTarget is a policy group one may ask to join for a while (GET
// /api/access/targets).
type AccessTarget struct {
	Name  string `json:"name"`
	Label string `json:"label,omitempty"`
	// Group is the tailnet policy group a grant adds the requester to.
	Group string `json:"group"`
	// Approvers are logins and group:x entries that may decide.
	Approvers         []string `json:"approvers,omitempty"`
	AllowSelfApproval bool     `json:"allowSelfApproval,omitempty"`
	// MaxSeconds is the longest grant; 0 means no limit of its own.
	MaxSeconds     int64 `json:"maxSeconds,omitempty"`
	ReasonRequired bool  `json:"reasonRequired,omitempty"`
	// CanApprove says whether the caller is one of the approvers.
	CanApprove bool `json:"canApprove"`

	// groupLogins are the members of the group:x approvers in the tailnet
	// policy, as the WebUI read it; not sent.
	groupLogins []string
}

// AccessDecision is an approver's answer to a request.
type AccessDecision struct {
	Approved bool      `json:"approved"`
	By       string    `json:"by"`
	At       time.Time `json:"at,omitzero"`
	Reason   string    `json:"reason,omitempty"`
}

// AccessEvent is one step in a request's history.
type AccessEvent struct {
	Type    string    `json:"type"` // Requested, Approved, Denied, Granted, Expired, Revoked, Failed...
	At      time.Time `json:"at,omitzero"`
	By      string    `json:"by,omitempty"`
	Message string    `json:"message,omitempty"`
}

// AccessRequest is one request for a grant, as the caller may see it.
type AccessRequest struct {
	Name      string      `json:"name"`
	Target    string      `json:"target"`
	Requester string      `json:"requester"`
	Seconds   int64       `json:"seconds"` // the duration asked for
	Reason    string      `json:"reason,omitempty"`
	Phase     AccessPhase `json:"phase"`
	// Message says why a request failed or what the operator is doing.
	Message   string          `json:"message,omitempty"`
	CreatedAt time.Time       `json:"createdAt,omitzero"`
	Decision  *AccessDecision `json:"decision,omitempty"`
	GrantedAt time.Time       `json:"grantedAt,omitzero"`
	ExpiresAt time.Time       `json:"expiresAt,omitzero"`
	EndedAt   time.Time       `json:"endedAt,omitzero"`
	// SecondsLeft is the time left of an active grant at the answer's
	// "now" (AccessOverview.Now), so that a page with a wrong clock still
	// counts down right.
	SecondsLeft int64         `json:"secondsLeft,omitempty"`
	History     []AccessEvent `json:"history,omitempty"`
	// Mine, CanApprove and CanRevoke are what the caller may do with it.
	Mine       bool `json:"mine"`
	CanApprove bool `json:"canApprove"`
	CanRevoke  bool `json:"canRevoke"`
}

// AccessOverview is everything the Access page shows (GET /api/access).
type AccessOverview struct {
	Me       Caller          `json:"me"`
	Now      time.Time       `json:"now"`
	Targets  []AccessTarget  `json:"targets"`
	Requests []AccessRequest `json:"requests"`
}

// AccessRequestCreate asks for a grant (POST /api/access/requests). The
// requester is the caller, from WhoIs: there is no field for it.
type AccessRequestCreate struct {
	Target  string `json:"target"`
	Seconds int64  `json:"seconds"`
	Reason  string `json:"reason,omitempty"`
}

// AccessAction is the body of approve, deny and revoke (POST
// /api/access/requests/{name}/{approve,deny,revoke}).
type AccessAction struct {
	Reason string `json:"reason,omitempty"`
}
