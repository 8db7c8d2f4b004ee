// Command pause holds a pod's namespaces open, like Kubernetes' pause
// container: it reaps orphans while it is PID 1 of a shared process namespace
// and exits 0 on SIGINT or SIGTERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 8)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range c {
		if sig != syscall.SIGCHLD {
			return
		}
		// One SIGCHLD may stand for many exits: reap until none is left.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
