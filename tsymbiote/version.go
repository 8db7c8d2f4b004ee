package tsymbiote

import (
	"cmp"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Stamped at link time by the Makefile:
//
//	-X tsymbiote.dhouti.dev/tsymbiote.version=v0.1.0-3-gabcdef
//	-X tsymbiote.dhouti.dev/tsymbiote.revision=<commit>
//
// Empty when built without them (go build, go install).
var version, revision string

// Info is what `tsymbiote version` prints.
type Info struct {
	Version  string // a release tag, git describe, or "(devel)"
	Revision string // the commit built, "+dirty" when the tree had changes; "unknown" without VCS data
	Go       string // the Go toolchain
}

// Version returns the build's version: the link-time stamp when there is
// one, else what the Go toolchain recorded in the binary (the module
// version and the VCS revision, present unless built with -buildvcs=false).
func Version() Info {
	return versionFrom(version, revision, debug.ReadBuildInfo)
}

func versionFrom(stampVersion, stampRevision string, read func() (*debug.BuildInfo, bool)) Info {
	info := Info{Version: stampVersion, Revision: stampRevision, Go: runtime.Version()}
	if bi, ok := read(); ok {
		info.Go = bi.GoVersion
		info.Version = cmp.Or(info.Version, bi.Main.Version)
		if info.Revision == "" {
			var modified bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					info.Revision = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if info.Revision != "" && modified {
				info.Revision += "+dirty"
			}
		}
	}
	info.Version = cmp.Or(info.Version, "(devel)")
	info.Revision = cmp.Or(info.Revision, "unknown")
	return info
}

func (i Info) String() string {
	return fmt.Sprintf("tsymbiote %s\nrevision %s\n%s", i.Version, i.Revision, i.Go)
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the revision it was built from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), Version())
			return err
		},
	}
}
