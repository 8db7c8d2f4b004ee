package main

import (
	"bytes"
	"encoding/pem"
	"sync"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// caBundle is the PEM file the images carry at the path Go's crypto/x509
// (and most other TLS stacks) read on Linux. It comes from the pinned
// x509roots module rather than the build machine's /etc/ssl, so that it is
// the same on every machine. Roots with extra constraints (a distrust-after
// date) are left out: a PEM file cannot carry the constraint, and trusting
// them without it would trust more than NSS does.
var caBundle = sync.OnceValue(func() []byte {
	var b bytes.Buffer
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate}))
	}
	return b.Bytes()
})
