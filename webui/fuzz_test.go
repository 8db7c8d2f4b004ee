package webui

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// FuzzFanoutRequest feeds arbitrary bodies to the fan-out request decoder
// and normalizer: it must never panic, and whatever it accepts must be
// within the limits.
func FuzzFanoutRequest(f *testing.F) {
	for _, s := range []string{
		`{"kind":"ping"}`,
		`{"kind":"ping","pingType":"TSMP","count":3,"timeoutMs":100,"concurrency":5,"perHost":2}`,
		`{"kind":"dns","dnsName":"node-01.tsymbiote.test","dnsType":"aaaa"}`,
		`{"kind":"dns","dnsName":"` + string(bytes.Repeat([]byte("a"), 300)) + `"}`,
		`{"kind":"ping","hosts":["a|b"],"peers":["1"],"includeOffline":true}`,
		`{"kind":"ping","count":-1}`,
		`{}`, `null`, `[]`, `{"kind":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req FanoutRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&req) != nil {
			return
		}
		if err := req.normalize(); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if req.Kind != "ping" && req.Kind != "dns" {
			t.Fatalf("accepted kind %q", req.Kind)
		}
		to := time.Duration(req.TimeoutMS) * time.Millisecond
		if to <= 0 || to > maxCallTimeout || req.Concurrency < 1 || req.Concurrency > maxConcurrency || req.PerHost < 1 || req.PerHost > maxPerHost {
			t.Fatalf("accepted out-of-range limits: %+v", req)
		}
		if req.Kind == "ping" && (req.Count < 1 || req.Count > maxPingCount || pingTypes[req.PingType] == 0) {
			t.Fatalf("accepted bad ping: %+v", req)
		}
		if req.Kind == "dns" && (req.DNSName == "" || !contains(dnsTypes, req.DNSType)) {
			t.Fatalf("accepted bad dns: %+v", req)
		}
	})
}
