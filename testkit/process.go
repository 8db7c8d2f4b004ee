package testkit

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StopGrace is how long Stop waits after SIGTERM before it kills: enough
// for the project's daemons to log out and delete their nodes.
const StopGrace = 10 * time.Second

// Process is a child process tied to the life of the process that started
// it. The kernel kills it when its starter dies (Pdeathsig), even without
// cleanup; it runs in its own process group, so that a kill reaches
// whatever it started; and Stop asks it to exit (SIGTERM) before killing
// it. Its last output is kept for errors and failed tests. Its methods are
// safe for concurrent use.
type Process struct {
	Name string // what logs and errors call it

	cmd      *exec.Cmd
	out      *tailBuffer
	done     chan struct{}
	err      error // Wait's result; set before done is closed
	stopOnce sync.Once
	stopErr  error
}

// Launch starts cmd as a Process named after its binary. Its output goes
// to cmd.Stdout and cmd.Stderr when set, and to Output in any case. The
// caller must call Stop (Start does it for a test).
func Launch(cmd *exec.Cmd) (*Process, error) {
	p := &Process{Name: filepath.Base(cmd.Path), cmd: cmd, out: &tailBuffer{}, done: make(chan struct{})}
	cmd.Stdout = teeTo(cmd.Stdout, p.out)
	cmd.Stderr = teeTo(cmd.Stderr, p.out)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", p.Name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Start is Launch for a test: it fails t when cmd does not start, stops
// the process when t ends, and then logs its last output if t failed.
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p, err := Launch(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Stop(StopGrace)
		if t.Failed() {
			t.Logf("%s (pid %d) last output:\n%s", p.Name, p.PID(), p.Output())
		}
	})
	return p
}

func teeTo(w io.Writer, tail *tailBuffer) io.Writer {
	if w == nil {
		return tail
	}
	return io.MultiWriter(w, tail)
}

// PID is the process's ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and its output is read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process exited (exec.Cmd.Wait's error); valid after Done.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process (not its group).
func (p *Process) Signal(sig syscall.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM, waits up to grace for an exit, then kills the whole
// process group, and returns how the process exited. It is safe to call
// more than once and after the process exited; later calls return the
// first's result.
func (p *Process) Stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		_ = p.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			p.killGroup()
		}
		p.stopErr = p.Err()
	})
	return p.stopErr
}

// Kill kills the process group at once, as a crash or a lost host would,
// and waits for the exit.
func (p *Process) Kill() {
	p.stopOnce.Do(func() {
		p.killGroup()
		p.stopErr = p.Err()
	})
}

func (p *Process) killGroup() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Output is the process's last output (up to 256 KiB).
func (p *Process) Output() string { return p.out.String() }

// WaitFor waits until the process's output holds mark: in the kept tail
// when it is called, or in anything written after, however much follows
// it (a chatty daemon can push a mark out of the tail within one poll).
// It fails when the process exits first or ctx ends, with the output in
// the error.
func (p *Process) WaitFor(ctx context.Context, mark string) error {
	seen, cancel := p.out.watch(mark)
	defer cancel()
	select {
	case <-seen:
		return nil
	case <-p.done:
		select {
		case <-seen:
			return nil
		default:
		}
		return fmt.Errorf("%s exited (%w) before saying %q:\n%s", p.Name, cmp.Or(p.err, errExitedCleanly), mark, p.Output())
	case <-ctx.Done():
		return fmt.Errorf("%s did not say %q: %w\n%s", p.Name, mark, ctx.Err(), p.Output())
	}
}

var errExitedCleanly = errors.New("exit status 0")

// tailBuffer keeps the last 256 KiB written to it: enough to show why a
// process failed, bounded for chatty daemons. It also tells watchers when
// a mark is written, whatever is written after it.
type tailBuffer struct {
	mu       sync.Mutex
	buf      []byte
	watchers map[*markWatch]struct{}
}

// markWatch is one WaitFor's mark; seen is closed when it is written.
type markWatch struct {
	mark string
	seen chan struct{}
}

const tailSize = 256 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := len(b.buf)
	b.buf = append(b.buf, p...)
	for w := range b.watchers {
		// A mark may straddle two writes: look from len(mark)-1 bytes
		// before this one.
		from := max(0, old-len(w.mark)+1)
		if bytes.Contains(b.buf[from:], []byte(w.mark)) {
			close(w.seen)
			delete(b.watchers, w)
		}
	}
	if len(b.buf) > tailSize {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-tailSize:]...)
	}
	return len(p), nil
}

// watch returns a channel closed once mark is in the tail or written; the
// cancel func stops watching.
func (b *tailBuffer) watch(mark string) (<-chan struct{}, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := &markWatch{mark: mark, seen: make(chan struct{})}
	if bytes.Contains(b.buf, []byte(mark)) {
		close(w.seen)
		return w.seen, func() {}
	}
	if b.watchers == nil {
		b.watchers = map[*markWatch]struct{}{}
	}
	b.watchers[w] = struct{}{}
	return w.seen, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.watchers, w)
	}
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
