//go:build bench

// Package bench holds benchmarks that print figures, each against a reference
// measured in the same run. They assert nothing about time. Run them with
// scripts/bench.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/tether"
)

// buildBinary builds the binary under test into dir.
func buildBinary(t *testing.T, dir string) string {
	t.Helper()
	bin, err := testsupport.BuildBinary(dir)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// timed runs a command to its end (tethered: it dies with the test binary)
// and returns how long it took; it fails t if the command fails.
func timed(t *testing.T, what string, name string, args ...string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := tether.Start(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	d := time.Since(start)
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, tail(out.String()))
	}
	return d
}

func tail(s string) string { return testsupport.Tail(s, 30) }

func size(t *testing.T, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestBuildBenchmark prints the full build time from an empty cache against
// the raw tool chain (mmdebstrap + mksquashfs of the same packages), the
// overlay-only rebuild time, and the sizes.
func TestBuildBenchmark(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the build benchmark needs root")
	}
	dir := t.TempDir()
	bin := buildBinary(t, dir)
	overlay := filepath.Join(dir, "overlay", "etc")
	os.MkdirAll(overlay, 0o755)
	note := filepath.Join(overlay, "bench-note")
	os.WriteFile(note, []byte("one\n"), 0o644)
	cfgPath := filepath.Join(dir, "cluster.toml")
	os.WriteFile(cfgPath, []byte("[image]\noverlay = \"overlay\"\n"), 0o644)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cache, out := filepath.Join(dir, "cache"), filepath.Join(dir, "out")

	// 1. The full build from an empty cache. It runs first, so that the raw
	// reference (second) gets any warmed mirror caches: the ratio errs
	// against us, not for us.
	full := timed(t, "full build", bin, "build", "--config", cfgPath, "--cache-dir", cache, "--output", out)

	// 2. The raw tool chain: mmdebstrap + mksquashfs of the same package set.
	raw := filepath.Join(dir, "raw")
	os.MkdirAll(raw, 0o755)
	pkgs := imagebuild.ImagePackages(cfg)
	mm := timed(t, "raw mmdebstrap", "unshare", append([]string{"--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--", "mmdebstrap"},
		imagebuild.MmdebstrapArgs(pkgs, cfg.Components(), cfg.Image.Suite, filepath.Join(raw, "root"), cfg.ResolvedMirror())...)...)
	sq := timed(t, "raw mksquashfs", "mksquashfs", imagebuild.MksquashfsArgs(filepath.Join(raw, "root"), filepath.Join(raw, "raw.squashfs"), "-quiet")...)
	os.RemoveAll(filepath.Join(raw, "root"))

	// 3. A rebuild after changing one overlay file.
	os.WriteFile(note, []byte("two\n"), 0o644)
	rebuild := timed(t, "overlay rebuild", bin, "build", "--config", cfgPath, "--cache-dir", cache, "--output", out)
	rep, err := testsupport.ReadReport(out)
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	for _, s := range rep.Stages {
		if s.Ran {
			ran = append(ran, s.Name)
		}
	}

	rawTotal := mm + sq
	mib := func(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
	fmt.Printf("\nBuild benchmark (%d cores, Debian %s, %d packages requested)\n", runtime.NumCPU(), cfg.Image.Suite, len(pkgs))
	fmt.Printf("  full build, empty cache        %7.1f s\n", full.Seconds())
	fmt.Printf("  raw mmdebstrap                 %7.1f s\n", mm.Seconds())
	fmt.Printf("  raw mksquashfs                 %7.1f s\n", sq.Seconds())
	fmt.Printf("  raw tool chain                 %7.1f s\n", rawTotal.Seconds())
	fmt.Printf("  ratio full / raw               %7.2f   (target <= 1.25, and full < 360 s)\n", full.Seconds()/rawTotal.Seconds())
	fmt.Printf("  overlay-only rebuild           %7.1f s  (stages run: %s; target < 60 s)\n", rebuild.Seconds(), strings.Join(ran, ", "))
	fmt.Printf("  ISO size                       %s\n", mib(size(t, filepath.Join(out, imagebuild.ISOName))))
	fmt.Printf("  squashfs base + custom         %s + %s\n", mib(size(t, filepath.Join(out, "netboot", contract.BaseLayer))),
		mib(size(t, filepath.Join(out, "netboot", contract.CustomLayer))))
	fmt.Printf("  raw squashfs (reference)       %s\n", mib(size(t, filepath.Join(raw, "raw.squashfs"))))
}
