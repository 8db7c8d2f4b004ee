// Command testapp is the HTTP server the cluster tests run in pods: it serves
// files with their SHA-256, echoes requests, and says who it is.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

func main() {
	var listen, dir string
	cmd := &cobra.Command{
		Use:   "testapp",
		Short: "Serve files with their SHA-256, echo requests and say who this is",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			srv := &http.Server{Addr: listen, Handler: newMux(dir), ReadHeaderTimeout: 10 * time.Second}
			log.Printf("testapp serving %s on %s", dir, listen)
			return srv.ListenAndServe()
		},
	}
	cmd.Flags().StringVar(&listen, "listen", ":8080", "address to serve on")
	cmd.Flags().StringVar(&dir, "dir", "/tmp", "directory served under /files/")
	if err := cmd.Execute(); err != nil {
		log.Fatal(err)
	}
}

func newMux(dir string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /files/", http.StripPrefix("/files/", http.FileServer(http.Dir(dir))))
	mux.HandleFunc("GET /sha256/{name...}", func(w http.ResponseWriter, r *http.Request) {
		sumFile(w, dir, r.PathValue("name"))
	})
	mux.HandleFunc("GET /bytes/{n}", serveBytes)
	mux.HandleFunc("/echo", echo)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}

// sumFile writes the hex SHA-256 of a file under dir, so that a test can
// check a download through the tailnet against the server's copy.
func sumFile(w http.ResponseWriter, dir, name string) {
	f, err := os.OpenInRoot(dir, name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, hex.EncodeToString(h.Sum(nil)))
}

// serveBytes writes n deterministic bytes (a repeating 0..255 pattern), for
// throughput tests that need no file on the server.
func serveBytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "want a byte count", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	var block [256]byte
	for i := range block {
		block[i] = byte(i)
	}
	for n > 0 {
		k := min(n, int64(len(block)))
		if _, err := w.Write(block[:k]); err != nil {
			return
		}
		n -= k
	}
}

// echo answers with what the caller sent and where it came from.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	host, _ := os.Hostname()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"method":     r.Method,
		"path":       r.URL.RequestURI(),
		"remoteAddr": r.RemoteAddr,
		"host":       r.Host,
		"hostname":   host,
		"headers":    r.Header,
		"body":       string(body),
	})
}
