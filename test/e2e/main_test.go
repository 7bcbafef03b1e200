//go:build e2e

// Package e2e holds the end-to-end tests: they build real images with Debian's
// tools and boot them in QEMU with real firmware. They need root, the tools
// from `clusterdebian doctor`, and time (minutes); run them with
// scripts/test, or: go test -tags e2e ./test/e2e/
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
)

// cdBinary is the static clusterdebian binary under test, built once.
var cdBinary string

// workDir keeps outputs between the tests of one run; E2E_KEEP=1 keeps it after.
var workDir string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e tests need root (mmdebstrap, namespaces, QEMU taps); skipping")
		os.Exit(0)
	}
	var err error
	workDir, err = os.MkdirTemp("", "clusterdebian-e2e-")
	if err != nil {
		panic(err)
	}
	os.Chmod(workDir, 0o755) // the not-root test runs the binary as nobody
	cdBinary = filepath.Join(workDir, "clusterdebian")
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(file), "..", "..")
	build := exec.Command("go", "build", "-o", cdBinary, "./cmd/clusterdebian")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Printf("building clusterdebian: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	if os.Getenv("E2E_KEEP") == "" {
		os.RemoveAll(workDir)
	} else {
		fmt.Println("kept", workDir)
	}
	os.Exit(code)
}

// cacheDir is shared with ordinary builds, so that the Debian bootstrap is
// reused between runs on the same machine. E2E_CACHE_DIR overrides it.
func cacheDir() string {
	if d := os.Getenv("E2E_CACHE_DIR"); d != "" {
		return d
	}
	return imagebuild.DefaultCacheDir
}

// result of one clusterdebian invocation.
type result struct {
	out  string
	code int
}

// run runs the binary with args and returns its combined output and exit code.
func run(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(ctx, cdBinary, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	t.Logf("$ clusterdebian %v (exit %d)\n%s", args, code, out.String())
	return result{out.String(), code}
}

// build runs clusterdebian build into out and returns its report.
func build(t *testing.T, out string, extra ...string) *imagebuild.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	args := append([]string{"build", "--output", out, "--cache-dir", cacheDir()}, extra...)
	r := run(t, ctx, args...)
	if r.code != 0 {
		if log, err := os.ReadFile(filepath.Join(out, imagebuild.LogName)); err == nil {
			t.Logf("build.log tail:\n%s", tail(string(log), 60))
		}
		t.Fatalf("build failed (exit %d)", r.code)
	}
	return readReport(t, out)
}

func readReport(t *testing.T, out string) *imagebuild.Report {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, imagebuild.ReportName))
	if err != nil {
		t.Fatal(err)
	}
	var rep imagebuild.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	return &rep
}

func tail(s string, n int) string {
	lines := bytes.Split([]byte(s), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

var (
	defaultOnce   sync.Once
	defaultOut    string
	defaultReport *imagebuild.Report
)

// defaultImage builds the default image (embedded config) once per run.
func defaultImage(t *testing.T) (out string, rep *imagebuild.Report) {
	t.Helper()
	defaultOnce.Do(func() {
		out := filepath.Join(workDir, "default")
		defaultReport = build(t, out)
		defaultOut = out
	})
	if defaultReport == nil {
		t.Fatal("the default image did not build (see the first test's log)")
	}
	return defaultOut, defaultReport
}
