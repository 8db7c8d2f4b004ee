package testkit

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that a child process may write while a test
// reads it: for a process's whole output, where Process.Output's tail is
// not enough (counting lines, looking for a secret anywhere in it).
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
