// Package testsupport holds what the end-to-end tests (test/e2e, build tag
// e2e) and the benchmarks (test/bench, tag bench) share: the clusterdebian
// binary under test, a build's report, polling, commands run in a guest,
// servers that die with the test, the parent process that the tests of
// packages tether and vm kill to see its child die with it, and scenarios
// of named steps that share one expensive setup (a booted cluster) and
// skip, naming the cause, what an earlier failure made pointless.
//
// It imports neither test package, nor internal/vm (whose own tests use
// it), so that every test can.
package testsupport

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
)

// RepoRoot is the repository's top folder, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildBinary builds the static clusterdebian binary (static, as
// scripts/lib.sh builds it, since tests copy it into guests) as
// dir/clusterdebian and returns its path.
func BuildBinary(dir string) (string, error) {
	bin := filepath.Join(dir, "clusterdebian")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/clusterdebian")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/clusterdebian: %v\n%s", err, out)
	}
	return bin, nil
}

// Tail returns the last n lines of s, for logs in failure messages.
func Tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ReadReport reads the report (imagebuild.ReportName) that
// `clusterdebian build` wrote into its output folder.
func ReadReport(outDir string) (*imagebuild.Report, error) {
	data, err := os.ReadFile(filepath.Join(outDir, imagebuild.ReportName))
	if err != nil {
		return nil, err
	}
	var rep imagebuild.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(outDir, imagebuild.ReportName), err)
	}
	return &rep, nil
}

// LogWriter is an io.Writer that sends what it gets to t's log, for the
// progress lines of long operations.
func LogWriter(t testing.TB) logWriter { return logWriter{t} }

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
