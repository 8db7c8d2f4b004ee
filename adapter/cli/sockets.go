package cli

import (
	"strings"

	"github.com/spf13/pflag"
)

// sockets is the --socket flag: a string flag that may be repeated, the
// first value given replacing the default. pflag's string-array flag would
// print its type as "stringArray" and its default in brackets; the adapter
// documents `--socket string ... (default /path)`, so the flag reads as one
// string in --help and stays repeatable.
type sockets struct {
	vals    *[]string
	changed bool
}

func newSockets(vals *[]string, def string) *sockets {
	*vals = []string{def}
	return &sockets{vals: vals}
}

func (s *sockets) Set(v string) error {
	if !s.changed {
		*s.vals = nil
		s.changed = true
	}
	*s.vals = append(*s.vals, v)
	return nil
}

func (s *sockets) String() string { return strings.Join(*s.vals, ",") }

// Type is "string" so that --help shows the placeholder "string".
func (s *sockets) Type() string { return "string" }

// socketFlag makes --help print the default unquoted: pflag quotes the
// default of a "string" flag, and the usage text already ends with it.
func socketFlag(f *pflag.Flag) {
	f.DefValue = ""
}
