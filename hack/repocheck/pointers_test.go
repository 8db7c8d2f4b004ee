package repocheck

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// outsidePointers are phrases that point a reader at something the
// repository does not hold: the working notes a change was made from, a
// sibling directory of the clone, a tracker that is not published with it.
// A comment or doc must state the fact itself instead. This file, which
// has to spell them out, is the one exempt.
var outsidePointers = []struct {
	re   *regexp.Regexp
	what string
}{
	{regexp.MustCompile(`(?i)\bseed[']s\b`), "a seed document"},
	{regexp.MustCompile(`(?i)\b(as|in|per|from|by|see) the seed\b`), "a seed document"},
	{regexp.MustCompile(`(?i)\bseed (doc|document|spec|brief|notes?)\b`), "a seed document"},
	{regexp.MustCompile(`\.\.[/]shared[/]`), "a path outside the repository"},
	{regexp.MustCompile(`\bshared[/]notes\b`), "a path outside the repository"},
	{regexp.MustCompile(`(?i)\bissue #?[0-9]+\b`), "an issue tracker the repository does not carry"},
}

// codeImport matches a line that imports a module by a relative path, which
// names a file of the repository, not a document outside it.
var codeImport = regexp.MustCompile(`^\s*(import|export)\b|\bfrom\s+['"]|\brequire\(`)

// textFile reports the files whose comments and prose the check reads:
// source, scripts, docs and configuration, not data or lock files.
func textFile(name string) bool {
	switch name {
	case "Makefile", "Dockerfile":
		return true
	}
	switch filepath.Ext(name) {
	case ".go", ".ts", ".tsx", ".js", ".mjs", ".sh", ".md", ".yaml", ".yml", ".env", ".proto", ".css", ".html", ".tpl", ".txt":
		return true
	}
	return false
}

// TestNoOutsidePointers fails when a comment or doc in the repository cites
// a document a reader of the repository does not have, so that every
// comment stays self-contained.
func TestNoOutsidePointers(t *testing.T) {
	root := repoRoot(t)
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && skipDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !textFile(d.Name()) {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if rel == filepath.Join("hack", "repocheck", "pointers_test.go") {
			return nil
		}
		files++
		for _, hit := range outsidePointersIn(t, path) {
			t.Errorf("%s:%d points at %s (%q); state the fact itself", rel, hit.line, hit.what, hit.text)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d files checked", files)
}

type pointerHit struct {
	line       int
	what, text string
}

func outsidePointersIn(t *testing.T, path string) []pointerHit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hits []pointerHit
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20) // minified assets have long lines
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if codeImport.MatchString(line) {
			continue
		}
		for _, p := range outsidePointers {
			if m := p.re.FindString(line); m != "" {
				hits = append(hits, pointerHit{line: n, what: p.what, text: strings.TrimSpace(m)})
				break // one report a line
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return hits
}

// TestOutsidePointerPatterns pins what the check catches and what it lets
// through: the word "seed" has honest uses (a fuzz corpus seed, a policy
// the tests seed a server with).
func TestOutsidePointerPatterns(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{"// Defaults, as the seed's flags state them.", true},
		{"Environment (as in the seed): TS_API_KEY", true},
		{"# Why these: ../shared/notes/sandbox.md", true},
		{"// see issue 12 for why", true},
		{"// FuzzHeadscaleNodes uses it as a seed.", false},
		{"const SeedPolicy = `{`", false},
		{"// the fuzz seed corpus lives in testdata", false},
		{"// the issue with a shared socket is that", false},
		{`import { theme } from "../shared/theme";`, false},
	}
	for _, tt := range tests {
		got := false
		if !codeImport.MatchString(tt.line) {
			for _, p := range outsidePointers {
				got = got || p.re.MatchString(tt.line)
			}
		}
		if got != tt.want {
			t.Errorf("%q: flagged = %v, want %v", tt.line, got, tt.want)
		}
	}
}
