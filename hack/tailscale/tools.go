//go:build tools

// Package tools pins the stock tailscaled and tailscale CLI built into ./bin.
package tools

import (
	_ "tailscale.com/cmd/tailscale"
	_ "tailscale.com/cmd/tailscaled"
)
