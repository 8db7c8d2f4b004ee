package adapter

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestSplitListener checks that connections go to gRPC or HTTP by their
// first bytes, with those bytes intact, and that silent ones are dropped.
func TestSplitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newSplitListener(ln)
	defer s.Close()
	send := func(msg string) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
	}
	read := func(l net.Listener, n int) string {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, n)
		_, err = io.ReadFull(bufio.NewReader(c), b)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	preface := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	send(preface)
	if got := read(s.grpc, len(preface)); got != preface {
		t.Errorf("gRPC got %q", got)
	}
	get := "GET /healthz HTTP/1.1\r\n"
	send(get)
	if got := read(s.http, len(get)); got != get {
		t.Errorf("HTTP got %q", got)
	}
	// A short first write still classifies once the rest arrives.
	send("GE")
	time.Sleep(10 * time.Millisecond)
	if got := read(s.http, 2); !strings.HasPrefix(got, "GE") {
		t.Errorf("short HTTP got %q", got)
	}
	s.Close()
	if _, err := s.grpc.Accept(); err == nil {
		t.Error("Accept after Close succeeded")
	}
}
