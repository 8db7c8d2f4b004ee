// Command testapp is the HTTP server the cluster tests run in pods: it serves
// files with their SHA-256, echoes requests, fetches URLs for the caller and
// says who it is.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

func main() {
	var listen, dir, udpEcho string
	cmd := &cobra.Command{
		Use:   "testapp",
		Short: "Serve files with their SHA-256, echo requests and say who this is",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if udpEcho != "" {
				pc, err := net.ListenPacket("udp", udpEcho)
				if err != nil {
					return err
				}
				log.Printf("testapp echoing UDP on %s", udpEcho)
				go serveUDPEcho(pc)
			}
			srv := &http.Server{Addr: listen, Handler: newMux(dir), ReadHeaderTimeout: 10 * time.Second}
			log.Printf("testapp serving %s on %s", dir, listen)
			return srv.ListenAndServe()
		},
	}
	cmd.Flags().StringVar(&listen, "listen", ":8080", "address to serve on")
	cmd.Flags().StringVar(&dir, "dir", "/tmp", "directory served under /files/")
	cmd.Flags().StringVar(&udpEcho, "udp-echo", "", "also answer every UDP datagram on this address with the same bytes; off when empty")
	if err := cmd.Execute(); err != nil {
		log.Fatal(err)
	}
}

// serveUDPEcho sends every datagram back to its sender, until pc fails.
func serveUDPEcho(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			log.Printf("udp echo: %v", err)
			return
		}
		if _, err := pc.WriteTo(buf[:n], addr); err != nil {
			log.Printf("udp echo to %v: %v", addr, err)
		}
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
	mux.HandleFunc("GET /fetch", fetch(http.DefaultClient))
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

// fetchResult is /fetch's answer: what the pod got from the URL.
type fetchResult struct {
	URL     string  `json:"url"`
	Status  int     `json:"status"`
	Bytes   int64   `json:"bytes"`
	SHA256  string  `json:"sha256"`
	Seconds float64 `json:"seconds"`
}

// fetch returns a handler that GETs ?url= from this pod and answers with
// the length and SHA-256 of the body, so that a test outside the pod can
// check a transfer between two pods (over the tailnet, say) without
// carrying the bytes itself. ?timeout= (a duration, 10s by default) bounds
// the whole transfer. A URL that cannot be fetched is a 502 naming why.
func fetch(client *http.Client) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		target := r.URL.Query().Get("url")
		u, err := url.Parse(target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			http.Error(w, "want ?url= with an http or https URL", http.StatusBadRequest)
			return
		}
		timeout := 10 * time.Second
		if v := r.URL.Query().Get("timeout"); v != "" {
			if timeout, err = time.ParseDuration(v); err != nil || timeout <= 0 {
				http.Error(w, "want ?timeout= as a positive duration like 5s", http.StatusBadRequest)
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		start := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, fmt.Sprintf("fetch: %v", err), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil {
			http.Error(w, fmt.Sprintf("fetch: reading the body after %d bytes: %v", n, err), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(fetchResult{
			URL:     target,
			Status:  resp.StatusCode,
			Bytes:   n,
			SHA256:  hex.EncodeToString(h.Sum(nil)),
			Seconds: time.Since(start).Seconds(),
		})
	}
}
