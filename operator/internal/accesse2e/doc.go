// Package accesse2e tests just-in-time access end to end: envtest's API
// server with the access CRDs and webhooks, the operator's access
// controllers, a real Headscale in database policy mode and tsnet nodes.
package accesse2e
