package testkit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// builds holds what BuildOnce built in this test process, removed by Main.
var builds struct {
	mu   sync.Mutex
	dir  string // holds every binary; made on first use
	byID map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// mainRunning is set by Main: BuildOnce refuses to build without it, as
// nothing else would remove the binaries.
var mainRunning atomic.Bool

// Main runs m's tests and then removes every binary BuildOnce built. A
// package whose tests call BuildOnce calls it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }
func Main(m *testing.M) int {
	sweepBuilds()
	mainRunning.Store(true)
	code := m.Run()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	return code
}

// BuildOnce builds the command pkg (an import path, such as
// tsymbiote.dhouti.dev/adapter/cmd/tsymbiote-adapter) with `go build
// flags...` in the repository's workspace, once per test process for each
// pkg and flags, and returns the binary's path; it is named after the
// package's last element. Tests run commands as users do, as separate
// processes, and share one build. A failed build fails t.
func BuildOnce(t testing.TB, pkg string, flags ...string) string {
	t.Helper()
	if !mainRunning.Load() {
		t.Fatal("testkit.BuildOnce needs the package's TestMain to call testkit.Main, which removes the binaries")
	}
	b := buildFor(pkg + "\x00" + strings.Join(flags, "\x00"))
	b.once.Do(func() { b.path, b.err = goBuild(pkg, flags) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func buildFor(id string) *build {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.byID == nil {
		builds.byID = map[string]*build{}
	}
	b := builds.byID[id]
	if b == nil {
		b = &build{}
		builds.byID[id] = b
	}
	return b
}

// goBuild builds pkg into a directory of its own (two builds of one
// package with different flags must not overwrite each other).
func goBuild(pkg string, flags []string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	builds.mu.Lock()
	if builds.dir == "" {
		builds.dir, err = os.MkdirTemp("", buildDirPrefix+strconv.Itoa(os.Getpid())+"-")
	}
	parent := builds.dir
	builds.mu.Unlock()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(parent, "")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, path.Base(pkg))
	// -buildvcs=false: a test binary needs no VCS stamp, and git refuses
	// to stamp from a checkout another user owns (tests run as non-root).
	args := append(append([]string{"build", "-buildvcs=false", "-o", bin}, flags...), pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

// buildDirPrefix names BuildOnce's directory, followed by the test
// process's PID, so that a later run can tell a dead run's directory.
const buildDirPrefix = "testkit-bin-"

// sweepBuilds removes the directories of test processes that died before
// Main could (a timeout, a kill): nothing else would.
func sweepBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPrefix+"*"))
	for _, dir := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), buildDirPrefix), "-")
		n, err := strconv.Atoi(pid)
		if err != nil || n <= 0 {
			continue
		}
		// EPERM: alive, another user's.
		if err := syscall.Kill(n, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue
		}
		os.RemoveAll(dir)
	}
}
