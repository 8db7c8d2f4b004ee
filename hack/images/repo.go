package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"tsymbiote.dhouti.dev/testkit"
)

// Repo is a checkout of the repository the images are built from.
type Repo struct {
	Root string
	Pins map[string]string // hack/versions.env
}

// OpenRepo reads the pins of the checkout at root.
func OpenRepo(root string) (*Repo, error) {
	// Absolute, since builds run in the modules' directories.
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	pins, err := testkit.Pins(root)
	if err != nil {
		return nil, fmt.Errorf("not the repository root: %w", err)
	}
	return &Repo{Root: root, Pins: pins}, nil
}

// Pin is the pinned version called name, or an error naming the file.
func (r *Repo) Pin(name string) (string, error) {
	v, ok := r.Pins[name]
	if !ok || v == "" {
		return "", fmt.Errorf("hack/versions.env has no %s", name)
	}
	return v, nil
}

// chartsWithImages are the charts whose appVersion is the images' tag (their
// image templates default the tag to it).
var chartsWithImages = []string{"charts/tailscale-cni", "charts/tsymbiote-operator"}

// AppVersion is the charts' appVersion, the one version of the project's
// images. The charts must agree, or `helm install` of one would ask for a tag
// this build did not make.
func (r *Repo) AppVersion() (string, error) {
	var version string
	for _, c := range chartsWithImages {
		v, err := readAppVersion(filepath.Join(r.Root, c, "Chart.yaml"))
		if err != nil {
			return "", err
		}
		if version != "" && v != version {
			return "", fmt.Errorf("%s has appVersion %q but %s has %q", c, v, chartsWithImages[0], version)
		}
		version = v
	}
	return version, nil
}

// readAppVersion reads the top-level appVersion of a Chart.yaml. Chart.yaml
// keeps it on one line, so this needs no YAML parser.
func readAppVersion(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "appVersion:"); ok {
			v = strings.Trim(strings.TrimSpace(v), `"'`)
			if v == "" {
				break
			}
			return v, nil
		}
	}
	return "", fmt.Errorf("%s: no appVersion", file)
}

// Revision is the commit checked out, with "-dirty" when tracked files differ
// from it, so that a label never claims a commit the binaries were not built
// from.
func (r *Repo) Revision(ctx context.Context) (string, error) {
	head, err := r.git(ctx, "rev-parse", "HEAD")
	if err != nil {
		return "", err
	}
	if _, err := r.git(ctx, "diff", "--quiet", "HEAD", "--"); err != nil {
		head += "-dirty"
	}
	return head, nil
}

// Epoch is the time every file and the image configs carry: SOURCE_DATE_EPOCH
// when set (the reproducible-builds convention), else the commit's time, so
// that two builds of one commit give the same digests.
func (r *Repo) Epoch(ctx context.Context) (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		var err error
		if s, err = r.git(ctx, "log", "-1", "--format=%ct"); err != nil {
			return time.Time{}, err
		}
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("source date epoch %q: %w", s, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

func (r *Repo) git(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = r.Root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(string(out)), nil
}

// Binary is a program in an image: built from Pkg in the module at Module
// (relative to the repository root), or copied from Prebuilt.
type Binary struct {
	Module   string
	Pkg      string
	Tags     []string
	LDFlags  []string
	Prebuilt string // path under the repository root, e.g. bin/headscale-v0.29.3
}

// Build returns the path of b's executable, building it into dir when it is
// not prebuilt. Builds are static (CGO_ENABLED=0) and reproducible: no paths
// (-trimpath), no VCS stamp and no build ID, so the same source gives the same
// bytes on any machine with the same Go.
func (r *Repo) Build(ctx context.Context, logf logf, b Binary, dir, arch string) (string, error) {
	if b.Prebuilt != "" {
		p := filepath.Join(r.Root, b.Prebuilt)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s is missing (make tools builds it): %w", b.Prebuilt, err)
		}
		return p, nil
	}
	out, err := filepath.Abs(filepath.Join(dir, filepath.Base(b.Pkg)))
	if err != nil {
		return "", err
	}
	args := []string{"build", "-trimpath", "-buildvcs=false",
		"-ldflags", strings.Join(append([]string{"-buildid=", "-s", "-w"}, b.LDFlags...), " "),
		"-o", out}
	if len(b.Tags) > 0 {
		args = append(args, "-tags", strings.Join(b.Tags, ","))
	}
	args = append(args, b.Pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Join(r.Root, b.Module)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %w\n%s", b.Pkg, b.Module, err, stderr.Bytes())
	}
	logf("built %s/%s in %v", b.Module, strings.TrimPrefix(b.Pkg, "./"), time.Since(start).Round(100*time.Millisecond))
	return out, nil
}
