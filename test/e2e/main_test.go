//go:build e2e

// Package e2e holds the end-to-end tests: they build real images with Debian's
// tools and boot them in QEMU with real firmware. They need root, the tools
// from `clusterdebian doctor`, and time (minutes); run them with
// scripts/test, or: go test -tags e2e ./test/e2e/
//
// The long scenarios (TestVirtualCluster, TestRAMRootPVM, TestLocalNode1)
// boot their machines once and run each check as a step, a subtest, on them
// (testsupport.Scenario). New checks on a virtual cluster belong in
// TestVirtualCluster's steps rather than in a test that boots another
// cluster: a boot costs minutes under TCG, and CI has an hour.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/tether"
)

// cdBinary is the static clusterdebian binary under test, built once.
var cdBinary string

// workDir keeps outputs between the tests of one run: $E2E_WORK_DIR, kept
// after the run (scripts/test hands the default image's ISO on to
// internal/vm's e2e test this way), or a temporary folder, kept with
// E2E_KEEP=1.
var workDir string

// notRunnable says why this run cannot run the tests (needE2E skips each
// with it); empty when it can.
var notRunnable string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		notRunnable = "the e2e tests need root (mmdebstrap, network namespaces, QEMU taps): run them with sudo ./scripts/test, or sudo go test -tags e2e ./test/e2e/"
		os.Exit(m.Run())
	}
	var err error
	keep := os.Getenv("E2E_KEEP") != ""
	if workDir = os.Getenv("E2E_WORK_DIR"); workDir != "" {
		keep = true
		err = os.MkdirAll(workDir, 0o755)
	} else {
		workDir, err = os.MkdirTemp("", "clusterdebian-e2e-")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(workDir, 0o755) // the not-root test runs the binary as nobody
	if cdBinary, err = testsupport.BuildBinary(workDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if keep {
		fmt.Println("kept", workDir)
	} else {
		os.RemoveAll(workDir)
	}
	os.Exit(code)
}

// needE2E skips t, with the reason, when this run cannot run e2e tests.
// Every test calls it first, so that a run as non-root shows a SKIP line
// per test instead of reporting ok having run nothing.
func needE2E(t *testing.T) {
	t.Helper()
	if notRunnable != "" {
		t.Skip(notRunnable)
	}
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

// run runs the binary with args and returns its combined output and exit
// code. The binary dies with the test binary (tether), also on a timeout.
func run(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(ctx, cdBinary, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := tether.Start(cmd)
	if err == nil {
		err = cmd.Wait()
	}
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
	rep, err := testsupport.ReadReport(out)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// tail is testsupport.Tail, short for the many failure messages here.
func tail(s string, n int) string { return testsupport.Tail(s, n) }

// image is an image built once per run, by the first test that needs it.
type image struct {
	name   string // its folder under workDir
	config string // cluster.toml; empty: the embedded default
	once   sync.Once
	out    string
	report *imagebuild.Report
}

var (
	defaultImg = &image{name: "default"}
	// ramImg is a bookworm image (the last suite with PVM) with MPI and
	// PVM, whose nodes run from RAM, and a desktop on node1 (one boot
	// checks both; the nodes' own copy of the root must not start X).
	ramImg = &image{name: "ram", config: `[image]
suite = "bookworm"
desktop = "` + desktopWM + `"

[cluster]
parallel = ["mpi", "pvm"]

[nodes]
root = "ram"
` + desktopUsers}
)

// get builds the image the first time and returns its output folder and
// report; later callers get the same, or fail if that build failed.
func (im *image) get(t *testing.T) (out string, rep *imagebuild.Report) {
	t.Helper()
	im.once.Do(func() {
		out := filepath.Join(workDir, im.name)
		var extra []string
		if im.config != "" {
			cfg := filepath.Join(workDir, im.name+".toml")
			if err := os.WriteFile(cfg, []byte(im.config), 0o644); err != nil {
				t.Fatal(err)
			}
			extra = []string{"--config", cfg}
		}
		im.report = build(t, out, extra...)
		im.out = out
	})
	if im.report == nil {
		t.Fatalf("the %s image did not build (see the first test that needed it)", im.name)
	}
	return im.out, im.report
}

// defaultImage builds the default image (embedded config) once per run.
func defaultImage(t *testing.T) (out string, rep *imagebuild.Report) {
	t.Helper()
	return defaultImg.get(t)
}
