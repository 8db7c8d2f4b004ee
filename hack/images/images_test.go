package main

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"tsymbiote.dhouti.dev/testkit"
)

const repoRoot = "../.."

// buildImages runs the command's build of names into a fresh directory.
func buildImages(t *testing.T, names ...string) []Built {
	t.Helper()
	return buildImagesIn(t, t.TempDir(), names...)
}

func buildImagesIn(t *testing.T, out string, names ...string) []Built {
	t.Helper()
	built, err := run(context.Background(), t.Logf, Options{Root: repoRoot, Out: out, Arch: defaultArch, Source: "https://example.test/src"}, names)
	if err != nil {
		t.Fatal(err)
	}
	return built
}

// TestReproducible builds the pause image twice, in different directories
// (one named relative to the working directory, as `make images` may),
// and wants the same bytes: the digest must be a function of the commit.
func TestReproducible(t *testing.T) {
	a := buildImages(t, "pause")[0]
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := buildImagesIn(t, rel, "pause")[0]
	if a.Digest != b.Digest {
		t.Fatalf("two builds of one tree differ: %s and %s", a.Digest, b.Digest)
	}
	ab, err := os.ReadFile(a.File)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(b.File)
	if err != nil {
		t.Fatal(err)
	}
	if string(ab) != string(bb) {
		t.Fatalf("two builds of one tree give different tarballs (same digest %s)", a.Digest)
	}
	t.Logf("pause: %s, %d bytes, twice", a.Digest, a.Size)
}

// TestImageConfigAndFiles reads a built tarball back and checks what a
// runtime will see: the tag, the entrypoint, the user, the labels, and the
// mode, owner and time of every file.
func TestImageConfigAndFiles(t *testing.T) {
	b := buildImages(t, "testapp")[0]
	repo, err := OpenRepo(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	version, err := repo.AppVersion()
	if err != nil {
		t.Fatal(err)
	}
	epoch, err := repo.Epoch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag("tsymbiote/testapp:" + version)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(b.File, &tag)
	if err != nil {
		t.Fatalf("tarball has no image tagged %s: %v", tag, err)
	}
	if d, err := img.Digest(); err != nil || d != b.Digest {
		t.Errorf("tarball reads back as %s (%v), build printed %s", d, err, b.Digest)
	}
	checkConfig(t, img, version, epoch)
	got := layerFiles(t, img)
	want := map[string]tarEntry{
		"etc/":                              {tar.TypeDir, 0o755, 0, 0},
		"etc/passwd":                        {tar.TypeReg, 0o644, 0, 0},
		"etc/group":                         {tar.TypeReg, 0o644, 0, 0},
		"etc/ssl/":                          {tar.TypeDir, 0o755, 0, 0},
		"etc/ssl/certs/":                    {tar.TypeDir, 0o755, 0, 0},
		"etc/ssl/certs/ca-certificates.crt": {tar.TypeReg, 0o644, 0, 0},
		"home/":                             {tar.TypeDir, 0o755, 0, 0},
		"home/nonroot/":                     {tar.TypeDir, 0o700, NonRoot, NonRoot},
		"root/":                             {tar.TypeDir, 0o700, 0, 0},
		"tmp/":                              {tar.TypeDir, 0o1777, 0, 0},
		"usr/":                              {tar.TypeDir, 0o755, 0, 0},
		"usr/local/":                        {tar.TypeDir, 0o755, 0, 0},
		"usr/local/bin/":                    {tar.TypeDir, 0o755, 0, 0},
		"usr/local/bin/testapp":             {tar.TypeReg, 0o755, 0, 0},
	}
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s missing from the layers", p)
		} else if g.entry != w {
			t.Errorf("%s: got %+v, want %+v", p, g.entry, w)
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected %s in the layers", p)
		}
		if !g.mtime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want the commit's %v", p, g.mtime, epoch)
		}
	}
	if g := got["etc/ssl/certs/ca-certificates.crt"]; g.size < 100_000 {
		t.Errorf("CA bundle is %d bytes; want the whole NSS set", g.size)
	}
}

func checkConfig(t *testing.T, img v1.Image, version string, epoch time.Time) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/testapp"}) {
		t.Errorf("entrypoint %q", c.Entrypoint)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	if !slices.Contains(c.Env, "HOME=/home/nonroot") {
		t.Errorf("env %q has no HOME=/home/nonroot", c.Env)
	}
	if got := c.Labels[LabelVersion]; got != version {
		t.Errorf("label %s = %q, want the charts' appVersion %q", LabelVersion, got, version)
	}
	if got := c.Labels[LabelRevision]; len(strings.TrimSuffix(got, "-dirty")) != 40 {
		t.Errorf("label %s = %q, want a commit hash", LabelRevision, got)
	}
	if got := c.Labels[LabelSource]; got != "https://example.test/src" {
		t.Errorf("label %s = %q", LabelSource, got)
	}
	if !cf.Created.Equal(epoch) || cf.OS != "linux" || cf.Architecture != defaultArch {
		t.Errorf("created %v on %s/%s, want %v on linux/%s", cf.Created.Time, cf.OS, cf.Architecture, epoch, defaultArch)
	}
	if len(cf.History) != 2 || !cf.History[1].Created.Equal(epoch) {
		t.Errorf("history %+v, want two entries at the commit's time", cf.History)
	}
}

type tarEntry struct {
	typ      byte
	mode     int64
	uid, gid int
}

type layerFile struct {
	entry tarEntry
	mtime time.Time
	size  int64
}

// layerFiles reads every entry of every layer of img.
func layerFiles(t *testing.T, img v1.Image) map[string]layerFile {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]layerFile{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, dup := files[h.Name]; dup {
				t.Errorf("%s is in two layers", h.Name)
			}
			files[h.Name] = layerFile{tarEntry{h.Typeflag, h.Mode, h.Uid, h.Gid}, h.ModTime, h.Size}
		}
		rc.Close()
	}
	return files
}

// TestPush pushes an image to a registry on loopback and wants the digest
// the build printed.
func TestPush(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	built, err := run(context.Background(), t.Logf, Options{Root: repoRoot, Out: t.TempDir(), Arch: defaultArch, Push: host + "/ci"}, []string{"pause"})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host + "/ci/pause:3.10")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref)
	if err != nil {
		t.Fatalf("pushed image not found: %v", err)
	}
	if desc.Digest != built[0].Digest {
		t.Errorf("registry has %s, build printed %s", desc.Digest, built[0].Digest)
	}
}

func TestWithParents(t *testing.T) {
	tests := []struct {
		name    string
		files   []File
		want    []string // paths in order
		wantErr string
	}{
		{
			name:  "parents added and sorted",
			files: []File{Exec("/usr/bin/b", ""), Exec("/a", "")},
			want:  []string{"/a", "/usr", "/usr/bin", "/usr/bin/b"},
		},
		{
			name:  "named parent kept",
			files: []File{Dir("/var/lib/x", 0o700, NonRoot), {Path: "/var/lib/x/f", Mode: 0o600}},
			want:  []string{"/var", "/var/lib", "/var/lib/x", "/var/lib/x/f"},
		},
		{name: "relative", files: []File{Exec("a/b", "")}, wantErr: "clean absolute"},
		{name: "unclean", files: []File{Exec("/a/../b", "")}, wantErr: "clean absolute"},
		{name: "root", files: []File{Dir("/", 0o755, Root)}, wantErr: "clean absolute"},
		{name: "twice", files: []File{Exec("/a", ""), Exec("/a", "")}, wantErr: "twice"},
		{name: "file as parent", files: []File{Exec("/a", ""), Exec("/a/b", "")}, wantErr: "is a file"},
		{name: "type bits", files: []File{{Path: "/a", Mode: fs.ModeSymlink | 0o777}}, wantErr: "permission bits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := withParents(tt.files)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var paths []string
			for _, f := range got {
				paths = append(paths, f.Path)
			}
			if !slices.Equal(paths, tt.want) {
				t.Errorf("paths %q, want %q", paths, tt.want)
			}
		})
	}
}

// TestPartsMatchCharts checks that `helm install` with no overrides asks for
// the images this program tags, and that the CNI image has the programs at
// the paths the DaemonSet runs.
func TestPartsMatchCharts(t *testing.T) {
	repo, err := OpenRepo(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	version, err := repo.AppVersion()
	if err != nil {
		t.Fatal(err)
	}
	parts, err := Parts(repo, version)
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(repoRoot, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		part, repository, values string
	}{
		{"tailscale-cni", "tsymbiote/tailscale-cni", "charts/tailscale-cni/values.yaml"},
		{"operator", "tsymbiote/operator", "charts/tsymbiote-operator/values.yaml"},
		{"adapter", "tsymbiote/adapter", "charts/tsymbiote-operator/values.yaml"},
	}
	for _, tt := range tests {
		p := parts[indexOf(parts, tt.part)]
		if p.Ref != tt.repository+":"+version {
			t.Errorf("%s is tagged %s, want %s:%s", tt.part, p.Ref, tt.repository, version)
		}
		if !strings.Contains(read(tt.values), "repository: "+tt.repository+"\n") {
			t.Errorf("%s no longer defaults to repository %s", tt.values, tt.repository)
		}
	}
	daemonset := read("charts/tailscale-cni/templates/daemonset.yaml")
	cni := parts[indexOf(parts, "tailscale-cni")]
	for path := range cni.Binaries {
		if !strings.Contains(daemonset, path) {
			t.Errorf("the DaemonSet never runs %s, which the image has", path)
		}
	}
	for _, want := range []string{"/opt/tailscale-cni/install-cni", "/opt/tailscale-cni/tailscale-cni-daemon", "/opt/tailscale-cni/tailscale-cni"} {
		if _, ok := cni.Binaries[want]; !ok {
			t.Errorf("the DaemonSet runs %s, which the image lacks", want)
		}
	}
}

// TestAllImages builds every image, as `make images` does. It needs the
// pinned servers in ./bin (make tools) and the WebUI's frontend build, and
// takes minutes on a cold cache.
func TestAllImages(t *testing.T) {
	testkit.Integration(t)
	built := buildImages(t)
	for _, b := range built {
		t.Logf("%-14s %-34s %6.1f MiB %s", b.Part.Name, b.Part.Ref, float64(b.Size)/(1<<20), b.Digest)
	}
}
