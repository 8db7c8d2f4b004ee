package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"tsymbiote.dhouti.dev/testkit"
)

// launch starts one of the demo's own children (the WebUI, the CNI daemon)
// as a testkit.Process: it dies with the demo (Pdeathsig) and is stopped
// with SIGTERM first, so that it can log out and delete its node. It runs
// in home, which is also its HOME and TMPDIR, and logs to home/name.log.
func launch(name, home string, env []string, bin string, args ...string) (*testkit.Process, error) {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	lf, err := os.Create(filepath.Join(home, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = home
	// TMPDIR too: a child killed with the demo (SIGKILL) leaves its
	// temporary files (the WebUI's tsnet state) where the next demo's sweep
	// of this demo's directory removes them.
	cmd.Env = append(append(os.Environ(), "HOME="+home, "TMPDIR="+home), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	p, err := testkit.Launch(cmd)
	if err != nil {
		lf.Close()
		return nil, err
	}
	p.Name = name
	go func() { <-p.Done(); lf.Close() }()
	return p, nil
}

// child is a process the demo watches for an unexpected exit.
type child struct {
	name   string
	done   <-chan struct{}
	output func() string
}

// firstExit reports the name of the first child to exit before ctx ends,
// after logging its last output. Children that exit once ctx has ended
// (the demo stopping them) are not news.
func firstExit(ctx context.Context, logf func(string, ...any), children []child) <-chan string {
	exited := make(chan string, len(children))
	for _, c := range children {
		go func() {
			select {
			case <-ctx.Done():
			case <-c.done:
				if ctx.Err() == nil {
					logf("demo: %s exited; its last output:\n%s", c.name, tail(c.output(), 4096))
					exited <- c.name
				}
			}
		}()
	}
	return exited
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
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
