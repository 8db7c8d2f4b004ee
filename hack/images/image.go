package main

import (
	"fmt"
	"io/fs"
	"runtime"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// Stamp is what every image of one build says about where it came from.
type Stamp struct {
	Version  string    // org.opencontainers.image.version
	Revision string    // org.opencontainers.image.revision: the commit
	Source   string    // org.opencontainers.image.source
	Created  time.Time // every timestamp in the image: the commit's time
	Arch     string    // GOARCH of the binaries and the image
}

// Labels are the OCI annotation keys the image configs carry.
const (
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelSource   = "org.opencontainers.image.source"
)

// Assemble makes an image of two layers: the base every image shares (users,
// CA bundle, /tmp, home directories), so that a node stores it once, and the
// part's own files.
func Assemble(s Stamp, user int, entrypoint []string, files []File) (v1.Image, error) {
	base, err := buildLayer(baseFiles(), s.Created)
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	app, err := buildLayer(files, s.Created)
	if err != nil {
		return nil, fmt.Errorf("app layer: %w", err)
	}
	created := v1.Time{Time: s.Created}
	// Docker media types (empty.Image's): the docker-archive tarball
	// records no manifest, and whoever reads it back (crane push, the
	// --push flag, containerd) rebuilds one with these types, so the
	// digest printed here is the one a registry reports.
	img, err := mutate.Append(empty.Image,
		mutate.Addendum{Layer: base, History: v1.History{Created: created, CreatedBy: "hack/images: base", Comment: "users, CA bundle, /tmp"}},
		mutate.Addendum{Layer: app, History: v1.History{Created: created, CreatedBy: "hack/images: " + entrypoint[0]}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.OS = "linux"
	cf.Architecture = s.Arch
	cf.Config = v1.Config{
		Entrypoint: entrypoint,
		User:       strconv.Itoa(user) + ":" + strconv.Itoa(user),
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home(user)},
		WorkingDir: "/",
		Labels: map[string]string{
			LabelVersion:  s.Version,
			LabelRevision: s.Revision,
			LabelSource:   s.Source,
		},
	}
	return mutate.ConfigFile(img, cf)
}

// baseFiles is the layer every image starts with. Its bytes depend only on
// the CA bundle and the build's timestamp, not on the image, so that images
// of one build share it.
func baseFiles() []File {
	return []File{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: caBundle()},
		Dir("/tmp", 0o777|fs.ModeSticky, Root),
		Dir("/root", 0o700, Root),
		Dir("/home/nonroot", 0o700, NonRoot),
	}
}

func home(user int) string {
	if user == Root {
		return "/root"
	}
	return "/home/nonroot"
}

// defaultArch is the architecture images are built for unless --arch says
// otherwise.
var defaultArch = runtime.GOARCH
