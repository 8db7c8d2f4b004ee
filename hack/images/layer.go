package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Owners of files in the images. NonRoot is distroless's "nonroot", which
// the charts' pod security contexts also use.
const (
	Root    = 0
	NonRoot = 65532
)

// File is one entry of a layer: a regular file (Data or Src), or a directory
// when Dir is set. Mode holds only permission bits (and sticky), so that
// what lands in the image never depends on the umask or on the mode of a
// file in the work tree.
type File struct {
	Path string // absolute path in the image
	Mode fs.FileMode
	UID  int
	GID  int
	Dir  bool
	Data []byte // contents, unless Src is set
	Src  string // file on disk whose contents are copied
}

// Exec is a root-owned executable at p, copied from src.
func Exec(p, src string) File { return File{Path: p, Mode: 0o755, Src: src} }

// Dir is a directory at p owned by uid (and its group).
func Dir(p string, mode fs.FileMode, uid int) File {
	return File{Path: p, Mode: mode, UID: uid, GID: uid, Dir: true}
}

// buildLayer writes files as one gzipped OCI layer with every timestamp set
// to mtime. Entries are sorted and every parent directory gets an explicit
// root-owned 0755 entry unless files name it, so that two builds of the same
// files give the same bytes and the same digest.
func buildLayer(files []File, mtime time.Time) (v1.Layer, error) {
	entries, err := withParents(files)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range entries {
		if err := writeEntry(tw, f, mtime); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing layer: %w", err)
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithCompressedCaching)
}

// withParents returns files sorted by path with an entry for every parent
// directory, and refuses relative or duplicate paths.
func withParents(files []File) ([]File, error) {
	byPath := map[string]File{}
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("path %q: want a clean absolute path", f.Path)
		}
		if _, dup := byPath[f.Path]; dup {
			return nil, fmt.Errorf("path %q given twice", f.Path)
		}
		if f.Mode&^(fs.ModePerm|fs.ModeSticky) != 0 {
			return nil, fmt.Errorf("path %q: mode %v has more than permission bits", f.Path, f.Mode)
		}
		byPath[f.Path] = f
	}
	for _, f := range files {
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if p, ok := byPath[d]; ok {
				if !p.Dir {
					return nil, fmt.Errorf("path %q is a file and the parent of %q", d, f.Path)
				}
				continue
			}
			byPath[d] = Dir(d, 0o755, Root)
		}
	}
	out := make([]File, 0, len(byPath))
	for _, f := range byPath {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func writeEntry(tw *tar.Writer, f File, mtime time.Time) error {
	h := &tar.Header{
		Name:    strings.TrimPrefix(f.Path, "/"),
		Mode:    tarMode(f.Mode),
		Uid:     f.UID,
		Gid:     f.GID,
		ModTime: mtime,
	}
	if f.Dir {
		h.Typeflag = tar.TypeDir
		h.Name += "/"
		return tw.WriteHeader(h)
	}
	data := f.Data
	if f.Src != "" {
		var err error
		if data, err = os.ReadFile(f.Src); err != nil {
			return err
		}
	}
	h.Typeflag = tar.TypeReg
	h.Size = int64(len(data))
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// tarMode is m in the tar header's encoding: permission bits plus the
// sticky bit as 01000 (fs.FileMode keeps it elsewhere).
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}
