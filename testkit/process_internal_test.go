package testkit

import (
	"bytes"
	"strings"
	"testing"
)

// TestTailBufferWatch: a mark is seen when written, even when far more
// than the tail follows it before anyone looks, and when it straddles two
// writes; a mark that scrolled out before the watch began is not.
func TestTailBufferWatch(t *testing.T) {
	var b tailBuffer
	seen, cancel := b.watch("recovered 110 pods")
	defer cancel()
	_, _ = b.Write([]byte("starting\nrecovered 1"))
	_, _ = b.Write([]byte("10 pods in 1.2s\n"))
	_, _ = b.Write(bytes.Repeat([]byte("chatter\n"), tailSize/4))
	select {
	case <-seen:
	default:
		t.Fatal("a mark split across writes and then pushed out of the tail was not seen")
	}
	if strings.Contains(b.String(), "recovered 110") {
		t.Fatal("the tail should no longer hold the mark")
	}
	late, cancel2 := b.watch("recovered 110 pods")
	defer cancel2()
	select {
	case <-late:
		t.Fatal("a watch begun after the mark left the tail saw it")
	default:
	}
	now, cancel3 := b.watch("chatter")
	defer cancel3()
	select {
	case <-now:
	default:
		t.Fatal("a mark already in the tail was not seen at once")
	}
}
