//go:build tools

// Package tools pins the Headscale server built into ./bin.
package tools

import _ "github.com/juanfont/headscale/cmd/headscale"
