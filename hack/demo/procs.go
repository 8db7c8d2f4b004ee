package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// procGroup runs the demo's child processes. Each child gets its own HOME
// and TMPDIR (where tsnet keeps its state) and log file, dies with the demo
// (Pdeathsig), and is stopped with SIGTERM first so that it can log out and
// delete its node, then SIGKILL.
type procGroup struct {
	mu     sync.Mutex
	procs  []*proc
	exited chan string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func (g *procGroup) start(ctx context.Context, logf func(string, ...any), name string, env []string, home, bin string, args ...string) error {
	g.mu.Lock()
	if g.exited == nil {
		g.exited = make(chan string, 64)
	}
	g.mu.Unlock()
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(home, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = home
	// TMPDIR too: a child killed with the demo (SIGKILL) leaves its
	// temporary files (the WebUI's tsnet state) where the next demo's sweep
	// of this demo's directory removes them.
	cmd.Env = append(append(os.Environ(), "HOME="+home, "TMPDIR="+home), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(p.done)
		select {
		case <-ctx.Done():
		default:
			select {
			case g.exited <- name:
			default:
			}
			if data, err := os.ReadFile(logPath); err == nil {
				logf("demo: %s exited; its last output:\n%s", name, tail(data, 4096))
			}
		}
	}()
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	return nil
}

// stop stops every child, newest first.
func (g *procGroup) stop(logf func(string, ...any)) {
	g.mu.Lock()
	procs := g.procs
	g.procs = nil
	g.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			logf("demo: %s did not stop in 10s; killing it", p.name)
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func splitListen(listen string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(listen)
	if err != nil {
		return "", "", fmt.Errorf("--listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", "", fmt.Errorf("--listen %q: the demo serves on loopback only", listen)
	}
	return host, port, nil
}

func waitHTTP(ctx context.Context, url string) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
