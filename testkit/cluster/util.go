package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"tsymbiote.dhouti.dev/testkit"
)

// The node's CNI directories: the usual ones, where containerd looks and
// the tailscale-cni chart's defaults write.
const (
	cniBinDir  = "/opt/cni/bin"
	cniConfDir = "/etc/cni/net.d"
	// PrimaryConflist is the file name of the primary network's conflist in
	// /etc/cni/net.d.
	PrimaryConflist = "10-" + NetworkName + ".conflist"
)

// ConflistPath is where the node's primary conflist lives; tailscale-cni's
// installer chains itself into it.
func ConflistPath() string { return cniConfDir + "/" + PrimaryConflist }

// CNIBinDir is the node's CNI plugin directory.
func CNIBinDir() string { return cniBinDir }

// httpOK returns a check that wants 200 from url.
func httpOK(url string, client *http.Client) func(context.Context) error {
	if client == nil {
		client = http.DefaultClient
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// ImageTarballs returns the paths of the named image tarballs in
// ./bin/images (pause, testapp, tailscale-cni, ...). When one is not built
// it skips t (make images), or fails it under CI=true.
func ImageTarballs(t testing.TB, names ...string) []string {
	t.Helper()
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		p := filepath.Join(root, "bin", "images", n+".tar")
		if _, err := os.Stat(p); err != nil {
			testkit.Missing(t, "image %s not built (make images)", p)
		}
		out = append(out, p)
	}
	return out
}
