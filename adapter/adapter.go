// Package adapter is the TSymbiote adapter: it attaches to one or more
// running tailscaled daemons through their LocalAPI sockets, joins the
// tailnet itself as a tsnet node, and answers the read-only
// adapter.v1.AdapterService for callers whose node carries the allowed tag.
//
// The pieces: [Targets] maps request target names to sockets; [Service]
// answers the gRPC calls through a narrow read-only view of the LocalAPI;
// the authorizer checks every caller with WhoIs on the adapter's own node;
// [Run] wires them to a listener (tsnet, or localhost in dev mode) shared by
// gRPC and a small HTTP side for /healthz and /metrics.
package adapter
