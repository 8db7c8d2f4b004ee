package podbackend

import (
	"testing"
	"time"
)

func TestHandshakeLost(t *testing.T) {
	restart := time.Unix(1000, 0)
	tests := []struct {
		name string
		h    Handshake
		want bool
	}{
		{"no peer", Handshake{}, false},
		{"peer, nothing sent", Handshake{Known: true}, false},
		{"sent, nothing heard", Handshake{Known: true, Sent: true}, true},
		{"sent, heard (responder of a handshake)", Handshake{Known: true, Sent: true, Heard: true}, false},
		{"sent, nothing heard, handshake before the restart", Handshake{Known: true, Sent: true, Last: restart.Add(-time.Second)}, true},
		{"sent, nothing heard, handshake since the restart", Handshake{Known: true, Sent: true, Last: restart.Add(time.Second)}, false},
	}
	for _, tt := range tests {
		if got := tt.h.Lost(restart); got != tt.want {
			t.Errorf("%s: Lost = %v, want %v", tt.name, got, tt.want)
		}
	}
}
