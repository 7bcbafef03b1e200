package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/hosttools"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/progress"
	"github.com/clusterdebian/clusterdebian/internal/version"
)

func newBuildCmd() *cobra.Command {
	var opts imagebuild.Options
	var configPath string
	cmd := explainErrors(&cobra.Command{
		Use:   "build",
		Short: "Build the ClusterDebian ISO and netboot files from cluster.toml",
		Long: `build makes a bootable hybrid ISO (BIOS and UEFI, CD or USB stick) from Debian
packages, in four cached stages: bootstrap (the Debian root, squashed into the
base layer), customize (the ClusterDebian files, users and overlay), layer (the
customization as an ext4 layer over the base) and iso. A rebuild runs only the
stages whose inputs changed.

The output folder gets clusterdebian.iso, netboot/ (vmlinuz, initrd.img and
the image layers), build-report.json, build.log, and credentials.txt when a
user's password was generated. Write the ISO to a USB stick with:
  dd if=out/clusterdebian.iso of=/dev/sdX bs=4M oflag=sync`,
		Example: `  sudo clusterdebian build
  sudo clusterdebian build --config cluster.toml --output out
  sudo clusterdebian build --from customize`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(configPath)
			if err != nil {
				return err
			}
			if err := requireRoot("build"); err != nil {
				return err
			}
			if err := hosttools.Require(hosttools.For(hosttools.Build)); err != nil {
				return fmt.Errorf("%w\n(or run: clusterdebian doctor --fix)", err)
			}
			if opts.Binary == "" {
				if opts.Binary, err = os.Executable(); err != nil {
					return err
				}
			}
			if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
				return fmt.Errorf("--output: %w", err)
			}
			logPath, _ := filepath.Abs(filepath.Join(opts.OutDir, imagebuild.LogName))
			logFile, err := os.Create(logPath)
			if err != nil {
				return fmt.Errorf("build log: %w", err)
			}
			defer logFile.Close()
			opts.Config = cfg
			opts.Log = logFile
			opts.Progress = progress.New(os.Stderr)
			opts.ManPages = func(dir string) error { return writeManPages(NewRootCommand(), dir) }
			p := opts.Progress
			p.Printf("clusterdebian %s: building Debian %s image (config: %s)", version.String(), cfg.Image.Suite, cfg.Source)
			p.Printf("full log: %s", logPath)
			report, err := imagebuild.Build(cmd.Context(), opts, version.String())
			if err != nil {
				if cmd.Context().Err() != nil {
					return &exitError{code: 130, msg: fmt.Sprintf("build interrupted; nothing was left mounted and the cache is intact. Full log: %s", logPath)}
				}
				if errors.Is(err, imagebuild.ErrCacheBusy) {
					err = fmt.Errorf("%w; wait for it, or use another --cache-dir", err)
				}
				return fmt.Errorf("%w\nfull log: %s", err, logPath)
			}
			ran := 0
			for _, s := range report.Stages {
				if s.Ran {
					ran++
				}
			}
			p.Printf("")
			p.Printf("ISO:      %s (%.0f MiB)", report.ISO, float64(report.ISOBytes)/(1<<20))
			p.Printf("netboot:  %s", filepath.Join(filepath.Dir(report.ISO), imagebuild.NetbootDir))
			p.Printf("stages:   %d ran, %d cached, %.0f s in all", ran, len(report.Stages)-ran, report.TotalSeconds)
			if fw := report.Firmware; fw != nil {
				names := make([]string, len(fw.Packages))
				for i, pk := range fw.Packages {
					names[i] = pk.Name
				}
				p.Printf("firmware: %s (%.0f MiB installed; image.firmware)", strings.Join(names, ", "), float64(fw.InstalledKiB)/1024)
			}
			if len(report.GeneratedPasswords) > 0 {
				names := make([]string, 0, len(report.GeneratedPasswords))
				for n := range report.GeneratedPasswords {
					names = append(names, n)
				}
				sort.Strings(names)
				p.Printf("")
				p.Printf("Generated passwords (shown once; also in %s):", filepath.Join(opts.OutDir, "credentials.txt"))
				for _, n := range names {
					p.Printf("  %s: %s", n, report.GeneratedPasswords[n])
				}
			}
			p.Printf("")
			p.Printf("Write it to a USB stick: dd if=%s of=/dev/sdX bs=4M oflag=sync", report.ISO)
			return nil
		},
	}, inputs{imagebuild.InputFrom: {flag: "--from"}})
	f := cmd.Flags()
	f.StringVarP(&configPath, "config", "c", "", "cluster.toml (default: the embedded default, see `clusterdebian config default`)")
	f.StringVarP(&opts.OutDir, "output", "o", "out", "output folder")
	f.StringVar(&opts.CacheDir, "cache-dir", imagebuild.DefaultCacheDir, "where stage outputs are cached between builds")
	f.BoolVar(&opts.Force, "force", false, "ignore the cache and run every stage")
	f.StringVar(&opts.From, "from", "", "ignore the cache from this stage on: "+strings.Join(imagebuild.Stages, ", "))
	f.StringVar(&opts.Binary, "binary", "", "static clusterdebian binary to put into the image (default: this one)")
	f.MarkHidden("binary")
	return cmd
}
