// Package proto holds TSymbiote's shared gRPC service definitions and the Go
// generated from them. Each service lives in <service>/v1; the daemons talk to
// each other only through these and the tailnet.
package proto
