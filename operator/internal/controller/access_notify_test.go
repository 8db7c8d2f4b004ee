package controller_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/types/logger"

	"tsymbiote.dhouti.dev/operator/internal/controller"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
)

// TestAccessNotify shows notifications reaching a Slack-compatible webhook,
// and a webhook that never answers delaying neither the grant nor the
// revoke.
func TestAccessNotify(t *testing.T) {
	var mu sync.Mutex
	var texts []string
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]string
		_ = json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		texts = append(texts, m["text"])
		mu.Unlock()
	}))
	defer ok.Close()
	hang := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer stuck.Close()

	for _, tc := range []struct {
		name, url string
	}{{"answering", ok.URL}, {"hanging", stuck.URL}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newAccessFixture(t)
			done := make(chan bool, 16)
			f.r.Notifier = &controller.Notifier{Logf: logger.Discard, Timeout: time.Minute, Retries: 1, Done: func(ok bool) { done <- ok }}
			tgt := &accessv1.AccessTarget{}
			if err := f.c.Get(context.Background(), keyOf("prod"), tgt); err != nil {
				t.Fatal(err)
			}
			tgt.Spec.Notify = &accessv1.Notify{WebhookURL: tc.url}
			if err := f.c.Update(context.Background(), tgt); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			f.create("r1", "alice@example.com", time.Minute, "k8s:user:admin")
			f.mustReconcile("r1", accessv1.PhasePending)
			f.decide("r1", accessv1.ActionApprove)
			f.mustReconcile("r1", accessv1.PhaseActive)
			f.decide("r1", accessv1.ActionRevoke)
			f.mustReconcile("r1", accessv1.PhaseRevoked)
			t.Logf("request to revoke with a %s webhook: %v", tc.name, time.Since(start).Round(time.Millisecond))
			if tc.name == "hanging" {
				// Every notification is still waiting for the webhook,
				// yet the grant and the revoke are done.
				if len(done) != 0 {
					t.Fatalf("%d notifications ended while the webhook hangs", len(done))
				}
				close(hang)
			}
			for range 4 { // Requested, Approved, Granted, Revoked
				select {
				case got := <-done:
					if !got {
						t.Errorf("a notification failed")
					}
				case <-time.After(15 * time.Second):
					t.Fatal("notification never ended")
				}
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(texts) != 4 || !strings.HasPrefix(texts[0], "Requested: alice@example.com for prod") || !strings.HasPrefix(texts[3], "Revoked:") {
		t.Errorf("texts = %q", texts)
	}
}
