// Package adapterv1 is the generated Go for adapter/v1/adapter.proto: the
// read-only service an adapter serves over the tailnet to the WebUI, one
// tailscaled daemon (target) per request.
package adapterv1
