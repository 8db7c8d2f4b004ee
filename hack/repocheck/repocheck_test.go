package repocheck

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
	"tsymbiote.dhouti.dev/testkit"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "hack", "versions.env")); err != nil {
		t.Fatalf("repository root not found at %s: %v", root, err)
	}
	return root
}

// skipDir reports directories that hold no code of ours.
func skipDir(name string) bool {
	switch name {
	case "node_modules", "testdata", "vendor", "bin", ".git", "dist":
		return true
	}
	return strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")
}

// TestPackageDocs checks that every Go package in the repository has a
// package doc comment in at least one of its non-test files.
func TestPackageDocs(t *testing.T) {
	root := repoRoot(t)
	type pkgInfo struct{ documented, hasCode bool }
	pkgs := map[string]*pkgInfo{} // dir/package name
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
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		key := rel + " (package " + f.Name.Name + ")"
		p := pkgs[key]
		if p == nil {
			p = &pkgInfo{}
			pkgs[key] = p
		}
		p.hasCode = true
		if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
			p.documented = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for k, p := range pkgs {
		if p.hasCode && !p.documented {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("%s has no package doc comment", m)
	}
	t.Logf("%d packages checked, %d undocumented", len(pkgs), len(missing))
}

func readPins(t *testing.T, root string) map[string]string {
	t.Helper()
	pins, err := testkit.Pins(root)
	if err != nil {
		t.Fatal(err)
	}
	return pins
}

// TestPinsAgree checks that every go.mod in the repository requires the
// pinned modules at exactly the versions in hack/versions.env.
func TestPinsAgree(t *testing.T) {
	root := repoRoot(t)
	pins := readPins(t, root)
	want := func(path string) (pin, version string, ok bool) {
		switch path {
		case "tailscale.com":
			pin = "TAILSCALE_VERSION"
		case "github.com/juanfont/headscale":
			pin = "HEADSCALE_VERSION"
		case "k8s.io/kubernetes":
			pin = "KUBERNETES_VERSION"
		case "sigs.k8s.io/controller-runtime":
			pin = "CONTROLLER_RUNTIME_VERSION"
		case "go.etcd.io/etcd/server/v3":
			pin = "ETCD_VERSION"
		case "github.com/containernetworking/plugins":
			pin = "CNI_PLUGINS_VERSION"
		case "k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go", "k8s.io/apiextensions-apiserver":
			pin = "K8S_MODULES_VERSION"
		default:
			return "", "", false
		}
		v, ok := pins[pin]
		return pin, v, ok
	}
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && skipDir(d.Name()) {
			return filepath.SkipDir
		}
		if d.Name() != "go.mod" {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		// The development tools pull k8s.io modules of their own choosing
		// (helm, controller-gen); they never link into our binaries.
		if rel == filepath.Join("hack", "tools", "go.mod") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		mf, err := modfile.Parse(path, data, nil)
		if err != nil {
			return err
		}
		checked++
		replaced := map[string]string{}
		for _, r := range mf.Replace {
			replaced[r.Old.Path] = r.New.Version
		}
		// The build modules under hack/ exist to build one upstream program
		// each; only what they require directly is ours to pin. Their
		// indirect requirements are the upstream program's own choices.
		buildModule := strings.HasPrefix(rel, "hack"+string(filepath.Separator))
		for _, r := range mf.Require {
			pin, v, ok := want(r.Mod.Path)
			if !ok || (buildModule && r.Indirect) {
				continue
			}
			got := r.Mod.Version
			if rv := replaced[r.Mod.Path]; rv != "" {
				got = rv
			}
			if got != v {
				t.Errorf("%s requires %s %s, but hack/versions.env pins %s=%s", rel, r.Mod.Path, got, pin, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d go.mod files checked against hack/versions.env", checked)
}

// TestNoBuildOutputTracked fails on executables and large files in git: a
// `go build` in a module directory drops its binary there, and one once
// slipped into a commit.
func TestNoBuildOutputTracked(t *testing.T) {
	root := repoRoot(t)
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	const maxSize = 1 << 20
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		path := filepath.Join(root, rel)
		fi, err := os.Lstat(path)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the working tree, or a link
		}
		if fi.Size() > maxSize {
			t.Errorf("%s is %d bytes; tracked files stay under %d", rel, fi.Size(), maxSize)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		magic := make([]byte, 4)
		n, _ := f.Read(magic)
		f.Close()
		if n == 4 && string(magic) == "\x7fELF" {
			t.Errorf("%s is an ELF binary; build output belongs in ./bin", rel)
		}
	}
}
