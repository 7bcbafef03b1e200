// Package imagebuild makes a ClusterDebian image from Debian packages, in four
// cached stages:
//
//	bootstrap  mmdebstrap the Debian root (stock kernel, live-boot, the chosen
//	           parallel stack) and squash it into the base layer
//	customize  the ClusterDebian layer: the clusterdebian binary, systemd units,
//	           banner, man pages, users and the user's overlay files
//	layer      pack the customization into its own small layer (ext4, so
//	           that node1's root stays NFS-exportable), which live-boot
//	           stacks on top of the base
//	iso        the hybrid BIOS+UEFI ISO (GRUB and xorriso), and netboot/
//
// Each stage's output is cached under a key made from its inputs, so a rebuild
// runs only the stages whose inputs changed. Debian's own tools do the work.
package imagebuild

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/progress"
)

// Stage names, in order.
const (
	StageBootstrap = "bootstrap"
	StageCustomize = "customize"
	StageLayer     = "layer"
	StageISO       = "iso"
)

// Stages lists the stages in the order they run.
var Stages = []string{StageBootstrap, StageCustomize, StageLayer, StageISO}

// retiredStages are the names stages had in earlier versions: their cache
// folders are removed, since nothing reads them any more.
var retiredStages = []string{"squashfs"} // StageLayer

// Output file names.
const (
	ISOName       = "clusterdebian.iso"
	NetbootDir    = "netboot"
	ReportName    = "build-report.json"
	LogName       = "build.log"
	PackageList   = "packages.txt"
	keepPerStage  = 2 // cache entries kept per stage
	bootstrapNeed = 4 << 30
)

// InputFrom names Options.From in errors (an *inputerr.Error), so that
// the CLI can name its flag.
const InputFrom = "first stage to rerun"

// Options configure one build.
type Options struct {
	Config   *config.Config
	OutDir   string
	CacheDir string
	// Force ignores the whole cache; From ignores it from that stage on.
	Force bool
	From  string
	// Binary is the static clusterdebian binary to put into the image.
	Binary string
	// ManPages writes the man pages of every command into a folder.
	ManPages func(dir string) error
	// Progress shows stages to the user; Log receives every tool's output.
	Progress *progress.Reporter
	Log      io.Writer
}

// StageReport tells what one stage did.
type StageReport struct {
	Name    string  `json:"name"`
	Key     string  `json:"key"`
	Ran     bool    `json:"ran"`
	Reason  string  `json:"reason"`
	Seconds float64 `json:"seconds"`
}

// Report is written to the output folder as build-report.json.
type Report struct {
	Version    string        `json:"version"`
	Suite      string        `json:"suite"`
	Stages     []StageReport `json:"stages"`
	ISO        string        `json:"iso"`
	ISOBytes   int64         `json:"iso_bytes"`
	LayerBytes int64         `json:"layer_bytes"` // the image layers in netboot/
	// Firmware lists image.firmware's packages in the image, with the
	// space they take installed; nil without image.firmware.
	Firmware     *FirmwareReport `json:"firmware,omitempty"`
	TotalSeconds float64         `json:"total_seconds"`
	// GeneratedPasswords are the passwords made in this build (printed once).
	GeneratedPasswords map[string]string `json:"-"`
}

// FirmwareReport is what image.firmware added to the image.
type FirmwareReport struct {
	Packages []InstalledPackage `json:"packages"`
	// InstalledKiB is the packages' Installed-Size together: what they
	// take in the root, before compression (the squashfs keeps them
	// compressed; firmware files are largely compressed already).
	InstalledKiB int64 `json:"installed_kib"`
}

// InstalledPackage is one package of the image, from dpkg's database.
type InstalledPackage struct {
	Name         string `json:"name"`
	Version      string `json:"version"`
	InstalledKiB int64  `json:"installed_kib"`
}

// firmwareReport reads the firmware packages from the bootstrap's package
// list (PackageList: name, version and Installed-Size in KiB, tab-separated).
func firmwareReport(list string, names []string) (*FirmwareReport, error) {
	if len(names) == 0 {
		return nil, nil
	}
	data, err := os.ReadFile(list)
	if err != nil {
		return nil, err
	}
	rep := &FirmwareReport{Packages: []InstalledPackage{}}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 3 || !slices.Contains(names, f[0]) {
			continue
		}
		kib, _ := strconv.ParseInt(f[2], 10, 64)
		rep.Packages = append(rep.Packages, InstalledPackage{Name: f[0], Version: f[1], InstalledKiB: kib})
		rep.InstalledKiB += kib
	}
	var missing []string
	for _, n := range names {
		if !slices.ContainsFunc(rep.Packages, func(p InstalledPackage) bool { return p.Name == n }) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the image lacks the firmware packages %s (%s)", strings.Join(missing, ", "), list)
	}
	return rep, nil
}

// build carries one build's state between stages.
type build struct {
	Options
	cache     *Cache
	accounts  []account
	mirror    string
	packages  []string
	binHash   string
	overlay   string
	dirs      map[string]string // stage -> cache entry folder
	keys      map[string]string
	version   string
	forceFrom int
	generated map[string]string
}

// Build runs the stages and publishes the ISO and netboot files to OutDir.
func Build(ctx context.Context, opts Options, version string) (*Report, error) {
	start := time.Now()
	// Modes in the image must not depend on the caller's umask.
	syscall.Umask(0o022)
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Progress == nil {
		opts.Progress = progress.New(io.Discard)
	}
	b := &build{Options: opts, dirs: map[string]string{}, keys: map[string]string{}, version: version, forceFrom: len(Stages)}
	switch {
	case opts.Force:
		b.forceFrom = 0
	case opts.From != "":
		i := slices.Index(Stages, opts.From)
		if i < 0 {
			return nil, inputerr.Errorf(InputFrom, strconv.Quote(opts.From), "no such stage; the stages are %s", strings.Join(Stages, ", "))
		}
		b.forceFrom = i
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("output folder: %w", err)
	}
	var err error
	b.accounts, b.generated, err = resolveAccounts(opts.Config.Users, opts.OutDir)
	if err != nil {
		return nil, err
	}
	if b.binHash, err = hashFile(opts.Binary); err != nil {
		return nil, fmt.Errorf("clusterdebian binary: %w", err)
	}
	b.overlay, err = hashTree(opts.Config.OverlayDir())
	if err != nil {
		return nil, fmt.Errorf("image.overlay: %w", err)
	}
	b.mirror = opts.Config.ResolvedMirror()
	b.packages = ImagePackages(opts.Config)

	b.cache, err = OpenCache(opts.CacheDir)
	if err != nil {
		return nil, err
	}
	defer b.cache.Close()

	report := &Report{Version: version, Suite: opts.Config.Image.Suite, GeneratedPasswords: b.generated}
	steps := []struct {
		name string
		key  func() string
		run  func(ctx context.Context, dir string, r *runner) error
	}{
		{StageBootstrap, b.bootstrapKey, b.bootstrap},
		{StageCustomize, b.customizeKey, b.customize},
		{StageLayer, b.layerKey, b.layer},
		{StageISO, b.isoKey, b.iso},
	}
	for i, st := range steps {
		key := st.key()
		b.keys[st.name] = key
		sr := StageReport{Name: st.name, Key: key}
		ps := opts.Progress.Stage(i+1, len(steps), st.name)
		var dir string
		var ok bool
		if i >= b.forceFrom {
			sr.Reason = "forced"
		} else {
			dir, ok, sr.Reason = b.cache.Lookup(st.name, key)
		}
		if !ok {
			fmt.Fprintf(opts.Log, "\n=== stage %s (key %s): %s\n", st.name, key, sr.Reason)
			dir, err = b.runStage(ctx, st.name, key, func(ctx context.Context, tmp string) error {
				return st.run(ctx, tmp, &runner{log: opts.Log, stage: ps})
			})
			if err != nil {
				ps.Done("FAILED")
				return nil, fmt.Errorf("stage %s: %w", st.name, err)
			}
			sr.Ran = true
			sr.Seconds = ps.Done("done").Seconds()
		} else {
			fmt.Fprintf(opts.Log, "\n=== stage %s (key %s): cached\n", st.name, key)
			sr.Seconds = ps.Done("cached").Seconds()
		}
		b.dirs[st.name] = dir
		report.Stages = append(report.Stages, sr)
	}
	for _, st := range Stages {
		b.cache.Prune(st, keepPerStage, b.dirs[st])
	}
	for _, st := range retiredStages {
		b.cache.Prune(st, 0)
		os.Remove(filepath.Join(b.cache.Dir, st))
	}
	if err := b.publish(report); err != nil {
		return nil, fmt.Errorf("publishing to %s: %w", opts.OutDir, err)
	}
	if report.Firmware, err = firmwareReport(filepath.Join(b.dirs[StageBootstrap], PackageList), FirmwarePackages(opts.Config)); err != nil {
		return nil, fmt.Errorf("image.firmware: %w", err)
	}
	report.TotalSeconds = time.Since(start).Seconds()
	data, _ := json.MarshalIndent(report, "", "  ")
	if err := writeFileAtomic(filepath.Join(opts.OutDir, ReportName), append(data, '\n'), 0o644); err != nil {
		return nil, err
	}
	return report, nil
}

// runStage runs fn in a scratch folder and seals it into the cache. On any
// failure or interruption the scratch folder goes, and the cache is untouched.
func (b *build) runStage(ctx context.Context, name, key string, fn func(context.Context, string) error) (string, error) {
	tmp, err := b.cache.TempDir(name)
	if err != nil {
		return "", err
	}
	defer removeTree(tmp)
	if err := fn(ctx, tmp); err != nil {
		return "", err
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	return b.cache.Commit(name, key, tmp)
}

// netbootFiles maps the names of the files node1 serves to the nodes (the
// output's netboot/, the ISO's live/) to where they are in the cache: the
// kernel, the initrds, the layers, and the Secure Boot chain's loaders for
// UEFI PXE clients.
func (b *build) netbootFiles() map[string]string {
	boot := b.dirs[StageBootstrap]
	return map[string]string{
		contract.KernelFile:      filepath.Join(boot, contract.KernelFile),
		contract.InitrdFile:      filepath.Join(boot, contract.InitrdFile),
		contract.NFSInitrdFile:   filepath.Join(boot, contract.NFSInitrdFile),
		contract.BaseLayer:       filepath.Join(boot, contract.BaseLayer),
		contract.CustomLayer:     filepath.Join(b.dirs[StageLayer], contract.CustomLayer),
		contract.UEFIPXEBootFile: filepath.Join(boot, efiSubdir, shimEFI),
		contract.GRUBNetFile:     filepath.Join(boot, efiSubdir, grubNetEFI),
	}
}

// publish puts the ISO and the netboot files into the output folder.
func (b *build) publish(report *Report) error {
	out := b.OutDir
	iso := filepath.Join(out, ISOName)
	if err := publish(filepath.Join(b.dirs[StageISO], ISOName), iso); err != nil {
		return err
	}
	nb := filepath.Join(out, NetbootDir)
	files := b.netbootFiles()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := publish(files[n], filepath.Join(nb, n)); err != nil {
			return err
		}
	}
	// Drop layers a previous build published that this one does not have.
	old, _ := filepath.Glob(filepath.Join(nb, "0*-*.*"))
	for _, o := range old {
		if _, ok := files[filepath.Base(o)]; !ok {
			os.Remove(o)
		}
	}
	fi, err := os.Stat(iso)
	if err != nil {
		return err
	}
	report.ISO, _ = filepath.Abs(iso)
	report.ISOBytes = fi.Size()
	for _, l := range []string{contract.BaseLayer, contract.CustomLayer} {
		if fi, err := os.Stat(filepath.Join(nb, l)); err == nil {
			report.LayerBytes += fi.Size()
		}
	}
	return nil
}
