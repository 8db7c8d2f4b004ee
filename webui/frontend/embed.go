// Package frontend embeds the WebUI's built React frontend (dist/app, made
// by `npm run build` in this directory) so that the binary needs no Node at
// run time. When the frontend has not been built, Assets reports false and
// the server shows Placeholder instead.
package frontend

import (
	"embed"
	"io/fs"
)

//go:embed all:dist
var dist embed.FS

// Assets returns the built frontend, and false when it was not built
// before the Go binary.
func Assets() (fs.FS, bool) {
	sub, err := fs.Sub(dist, "dist/app")
	if err != nil {
		return nil, false
	}
	if _, err := fs.Stat(sub, "index.html"); err != nil {
		return nil, false
	}
	return sub, true
}

// Placeholder is served at / when the frontend was not built.
const Placeholder = `<!doctype html>
<html><head><meta charset="utf-8"><title>TSymbiote WebUI</title></head>
<body style="font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto">
<h1>TSymbiote WebUI</h1>
<p>This binary was built without its frontend. Build it first:</p>
<pre>cd webui/frontend && npm ci && npm run build
cd .. && go build ./cmd/tsymbiote-webui</pre>
<p>The API under <code>/api/</code> works regardless.</p>
</body></html>
`
