// Command images builds the project's container images, and the images the
// cluster tests run, as tarballs without a Docker engine.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/spf13/cobra"
)

// logf is where progress goes (log.Printf in main, t.Logf in tests).
type logf = func(format string, args ...any)

// Options are the command's flags.
type Options struct {
	Root     string // repository root
	Out      string // directory the tarballs go to
	Arch     string
	Source   string // org.opencontainers.image.source
	Push     string // registry (and optional path) to push to after writing
	Insecure bool   // push over plain HTTP
}

func main() {
	if err := newCommand().Execute(); err != nil {
		log.Fatalf("images: %v", err)
	}
}

func newCommand() *cobra.Command {
	var o Options
	cmd := &cobra.Command{
		Use:           "images [flags] [image ...]",
		Short:         "Build every image, or the ones named, into --out as docker-archive tarballs",
		Args:          cobra.ArbitraryArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, names []string) error {
			log.SetFlags(0)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			start := time.Now()
			built, err := run(ctx, log.Printf, o, names)
			if err != nil {
				return err
			}
			printTable(cmd.OutOrStdout(), built)
			log.Printf("built %d images in %v", len(built), time.Since(start).Round(100*time.Millisecond))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Root, "root", "", "repository root; found from the working directory when empty")
	f.StringVar(&o.Out, "out", "", "directory for the image tarballs; <root>/bin/images when empty")
	f.StringVar(&o.Arch, "arch", defaultArch, "GOARCH of the images")
	f.StringVar(&o.Source, "source", "https://tsymbiote.dhouti.dev", "org.opencontainers.image.source label")
	f.StringVar(&o.Push, "push", "", "also push every image to this registry prefix, e.g. $REGISTRY/team: each lands at <prefix>/<repository>:<tag>")
	f.BoolVar(&o.Insecure, "insecure", false, "push over plain HTTP")
	return cmd
}

// Built is one image written to disk.
type Built struct {
	Part   Part
	File   string
	Size   int64   // of the tarball
	Digest v1.Hash // of the manifest: what a registry reports after a push
}

// run builds the parts named in names (all when empty) and writes each to
// o.Out, then pushes them when o.Push is set.
func run(ctx context.Context, logf logf, o Options, names []string) ([]Built, error) {
	repo, stamp, err := openStamped(ctx, o)
	if err != nil {
		return nil, err
	}
	all, err := Parts(repo, stamp.Version)
	if err != nil {
		return nil, err
	}
	parts, err := Select(all, names)
	if err != nil {
		return nil, err
	}
	if o.Out == "" {
		o.Out = filepath.Join(repo.Root, "bin", "images")
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	var built []Built
	for _, p := range parts {
		b, err := buildPart(ctx, logf, repo, stamp, p, o.Out)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		built = append(built, b)
	}
	if o.Push != "" {
		if err := pushAll(ctx, logf, built, o.Push, o.Insecure); err != nil {
			return nil, err
		}
	}
	return built, nil
}

// openStamped finds the repository and what every image will say about it.
func openStamped(ctx context.Context, o Options) (*Repo, Stamp, error) {
	root := o.Root
	if root == "" {
		var err error
		if root, err = findRoot(); err != nil {
			return nil, Stamp{}, err
		}
	}
	repo, err := OpenRepo(root)
	if err != nil {
		return nil, Stamp{}, err
	}
	s := Stamp{Source: o.Source, Arch: o.Arch}
	if s.Version, err = repo.AppVersion(); err != nil {
		return nil, Stamp{}, err
	}
	if s.Revision, err = repo.Revision(ctx); err != nil {
		return nil, Stamp{}, err
	}
	if s.Created, err = repo.Epoch(ctx); err != nil {
		return nil, Stamp{}, err
	}
	return repo, s, nil
}

// findRoot walks up from the working directory to the repository root.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "versions.env")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no repository root (hack/versions.env) above the working directory; use --root")
		}
		dir = parent
	}
}

// buildPart builds p's binaries, assembles its image and writes it to
// out/<name>.tar under its tag, replacing the file only once it is whole.
func buildPart(ctx context.Context, logf logf, repo *Repo, s Stamp, p Part, out string) (Built, error) {
	tmp, err := os.MkdirTemp(out, ".build-"+p.Name+"-")
	if err != nil {
		return Built{}, err
	}
	defer os.RemoveAll(tmp)
	files := append([]File(nil), p.Dirs...)
	for dst, bin := range p.Binaries {
		src, err := repo.Build(ctx, logf, bin, tmp, s.Arch)
		if err != nil {
			return Built{}, err
		}
		files = append(files, Exec(dst, src))
	}
	img, err := Assemble(s, p.User, p.Entrypoint, files)
	if err != nil {
		return Built{}, err
	}
	return writeTarball(img, p, filepath.Join(out, p.Name+".tar"))
}

// writeTarball writes img as a docker-archive tarball tagged p.Ref, the
// format `ctr images import`, `docker load` and `crane push` all read.
func writeTarball(img v1.Image, p Part, file string) (Built, error) {
	tag, err := name.NewTag(p.Ref)
	if err != nil {
		return Built{}, err
	}
	tmp := file + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, map[name.Reference]v1.Image{tag: img}); err != nil {
		os.Remove(tmp)
		return Built{}, fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return Built{}, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return Built{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return Built{}, err
	}
	return Built{Part: p, File: file, Size: fi.Size(), Digest: digest}, nil
}

// pushAll pushes every built image to prefix/<repository>:<tag>, with the
// credentials docker and crane use (~/.docker/config.json and helpers).
func pushAll(ctx context.Context, logf logf, built []Built, prefix string, insecure bool) error {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	for _, b := range built {
		src, err := name.NewTag(b.Part.Ref)
		if err != nil {
			return err
		}
		dst, err := name.NewTag(prefix+"/"+src.RepositoryStr()+":"+src.TagStr(), opts...)
		if err != nil {
			return fmt.Errorf("push target for %s: %w", b.Part.Name, err)
		}
		img, err := tarball.ImageFromPath(b.File, &src)
		if err != nil {
			return err
		}
		if err := remote.Write(dst, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("pushing %s: %w", dst, err)
		}
		logf("pushed %s@%s", dst, b.Digest)
	}
	return nil
}

func printTable(w io.Writer, built []Built) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tREF\tSIZE\tDIGEST")
	for _, b := range built {
		fmt.Fprintf(tw, "%s\t%s\t%.1f MiB\t%s\n", b.Part.Name, b.Part.Ref, float64(b.Size)/(1<<20), b.Digest)
	}
	tw.Flush()
}
