package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/clusterdebian/clusterdebian/imagefiles"
	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// bootstrapRecipe changes whenever the way the base is made changes, so that
// old cache entries are not reused for a different recipe.
const bootstrapRecipe = 3

func (b *build) bootstrapKey() string {
	return Key("bootstrap", bootstrapRecipe, b.Config.Image.Suite, b.mirror, b.packages, b.Config.Components(),
		MmdebstrapArgs(nil, nil, "", "", ""), hooks("SCRIPT", "LAYERS", true, true), imagefiles.NodeInitramfsScript, imagefiles.LiveLayersScript,
		packageHooks(b.packages))
}

// Debian's signed EFI binaries, as the efi-signed.sh hook leaves them in
// the new root's efiDir and the bootstrap keeps them in its cache entry:
// shim, GRUB's CD image (the ISO's EFI system partition) and its network
// image (served to UEFI PXE clients as contract.GRUBNetFile).
const (
	efiDir      = "boot/clusterdebian-efi"
	shimEFI     = "shimx64.efi"
	grubCDEFI   = "gcdx64.efi"
	grubNetEFI  = "grubnetx64.efi"
	efiSubdir   = "efi"
	packagesFmt = "${Package}\t${Version}\t${Installed-Size}\n"
)

// Where the hooks upload the initramfs pieces into the new root; the hook
// scripts of imagefiles/hooks make these folders and set these files' modes.
const (
	// liveLayersPath is where live-boot sources the layers extension from
	// (it reads /lib/live/boot/????-*, after its own 9990 files).
	liveLayersPath = "/usr/lib/live/boot/9995-clusterdebian-layers.sh"
	// liveNodeScriptPath runs the node script as a live-bottom script.
	liveNodeScriptPath = "/etc/initramfs-tools/scripts/live-bottom/clusterdebian-node"
	// nfsNodeScriptPath runs it as an nfs-bottom script in the nodes'
	// initramfs-tools configuration (/etc/clusterdebian/initramfs-nfs),
	// kept in the image so that node1 can remake that initrd.
	nfsNodeScriptPath = "/etc/clusterdebian/initramfs-nfs/scripts/nfs-bottom/clusterdebian-node"
)

// hooks returns mmdebstrap's hook options; script is the node initramfs script
// and layers the live-boot extension, both on the host, and pvm says the
// image has PVM, whose remote shell becomes ssh. The shell hooks are
// the scripts of imagefiles/hooks, passed as their text (mmdebstrap runs
// them with sh -c, the root as $1); the uploads between them are
// mmdebstrap's own.
//
// The essential hooks run before the kernel and live-boot are installed, so
// the live initrd that the kernel's installation makes already has the
// nodes' RAM-root pieces: the live-boot extension that fetches every layer,
// and the node script, as a live-bottom script (it does nothing on node1).
//
// The customize hooks run after the packages: they make the nodes' initrd
// for the shared root (initramfs-tools with BOOT=nfs, plus the node script),
// and remove the SSH host keys, which are made per machine at boot. With
// firmware (image.firmware) they first put every CPU's microcode into the
// initrds. Last, they fetch Debian's signed shim and GRUB for the ISO and
// the netboot files, outside the image's package set.
func hooks(script, layers string, pvm, firmware bool) []string {
	hs := []string{
		"--essential-hook=" + imagefiles.Hook("live-initramfs-dirs.sh"),
		"--essential-hook=upload " + layers + " " + liveLayersPath,
		"--essential-hook=upload " + script + " " + liveNodeScriptPath,
		"--essential-hook=" + imagefiles.Hook("live-initramfs-modes.sh"),
	}
	if firmware {
		hs = append(hs, "--customize-hook="+imagefiles.Hook("microcode-initramfs.sh"))
	}
	hs = append(hs,
		"--customize-hook="+imagefiles.Hook("nfs-initramfs-conf.sh"),
		"--customize-hook=upload "+script+" "+nfsNodeScriptPath,
		"--customize-hook="+imagefiles.Hook("nfs-initrd.sh"),
		"--customize-hook="+imagefiles.Hook("no-ssh-host-keys.sh"),
		"--customize-hook="+imagefiles.Hook("efi-signed.sh"),
	)
	if pvm {
		hs = append(hs, "--customize-hook="+imagefiles.Hook("pvm-ssh-rsh.sh"))
	}
	return hs
}

// packageHooks returns the customize hooks that some packages need: with
// munge, removing the key its installation made.
func packageHooks(pkgs []string) []string {
	var hs []string
	if slices.Contains(pkgs, "munge") {
		hs = append(hs, "--customize-hook="+imagefiles.Hook("no-munge-key.sh"))
	}
	return hs
}

// MmdebstrapArgs returns mmdebstrap's arguments for a root with packages
// from the archive components (config.Config.Components; nil: main only);
// extra options go before the positional arguments. The benchmark uses the
// same arguments, without hooks, for its raw reference run.
func MmdebstrapArgs(packages, components []string, suite, target, mirror string, extra ...string) []string {
	args := []string{
		"--mode=root",
		"--variant=important",
		"--aptopt=Acquire::Retries \"3\"",
		// Documentation is online; copyright files stay, as Debian requires.
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
	}
	if len(components) > 0 {
		args = append(args, "--components="+strings.Join(components, ","))
	}
	if len(packages) > 0 {
		args = append(args, "--include="+strings.Join(packages, ","))
	}
	args = append(args, extra...)
	if suite != "" {
		args = append(args, suite, target, mirror)
	}
	return args
}

// MksquashfsArgs returns mksquashfs's arguments: zstd, on every core.
func MksquashfsArgs(src, dst string, extra ...string) []string {
	args := []string{src, dst, "-noappend", "-comp", "zstd", "-processors", strconv.Itoa(runtime.NumCPU())}
	return append(args, extra...)
}

// unshareArgs wraps a command in its own mount and PID namespaces: whatever it
// mounts disappears with it, and killing it kills everything it started.
func unshareArgs(name string, args ...string) []string {
	return append([]string{"--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--", name}, args...)
}

var (
	unknownPackageRE = regexp.MustCompile(`E: (?:Unable to locate package ([^\s]+)|Package '([^']+)' has no installation candidate|Couldn't find any package by (?:glob|regex) '([^']+)')`)
	// missingComponentRE is apt's warning for a mirror without a
	// component the sources name.
	missingComponentRE = regexp.MustCompile(`doesn't have the component '([^']+)'`)
)

func (b *build) bootstrap(ctx context.Context, dir string, r *runner) error {
	if err := requireSpace(b.cache.Dir, bootstrapNeed, "the bootstrap"); err != nil {
		return err
	}
	root := filepath.Join(dir, "root")
	script := filepath.Join(dir, "clusterdebian-node.initramfs")
	if err := os.WriteFile(script, []byte(imagefiles.NodeInitramfsScript), 0o755); err != nil {
		return err
	}
	defer os.Remove(script)
	layers := filepath.Join(dir, "clusterdebian-layers.sh")
	if err := os.WriteFile(layers, []byte(imagefiles.LiveLayersScript), 0o755); err != nil {
		return err
	}
	defer os.Remove(layers)
	r.stage.Status("mmdebstrap " + b.Config.Image.Suite + " from " + b.mirror)
	hs := append(hooks(script, layers, slices.Contains(b.packages, "pvm"), b.Config.Image.Firmware), packageHooks(b.packages)...)
	err := r.run(ctx, "unshare", unshareArgs("mmdebstrap",
		MmdebstrapArgs(b.packages, b.Config.Components(), b.Config.Image.Suite, root, b.mirror, hs...)...)...)
	if err != nil {
		return b.explainBootstrapError(err)
	}

	// The kernel and initrd boot from the medium, not from the squashfs.
	boot := filepath.Join(root, "boot")
	for pattern, name := range map[string]string{"vmlinuz-*": contract.KernelFile, "initrd.img-*": contract.InitrdFile, contract.NFSInitrdFile: contract.NFSInitrdFile} {
		matches, _ := filepath.Glob(filepath.Join(boot, pattern))
		if len(matches) == 0 {
			return fmt.Errorf("the bootstrap has no /boot/%s: is linux-image-amd64 installed?", pattern)
		}
		sort.Strings(matches)
		if err := os.Rename(matches[len(matches)-1], filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	// Debian's signed EFI binaries (the efi-signed.sh hook) stay out of
	// the squashfs.
	if err := os.Rename(filepath.Join(root, efiDir), filepath.Join(dir, efiSubdir)); err != nil {
		return fmt.Errorf("the bootstrap did not fetch Debian's signed shim and GRUB: %w", err)
	}
	for _, f := range []string{shimEFI, grubCDEFI, grubNetEFI} {
		if _, err := os.Stat(filepath.Join(dir, efiSubdir, f)); err != nil {
			return fmt.Errorf("the bootstrap did not fetch Debian's signed shim and GRUB: %w", err)
		}
	}
	for _, m := range []string{"memtest86+x64.bin", "memtest86+x64.efi"} {
		if _, err := os.Stat(filepath.Join(boot, m)); err == nil {
			if err := atomicfile.Copy(filepath.Join(boot, m), filepath.Join(dir, m), atomicfile.CopyOptions{Mode: 0o644}); err != nil {
				return err
			}
		}
	}

	// The account files and /etc/skel, for the customize stage.
	etc := filepath.Join(dir, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"passwd", "group", "shadow", "gshadow"} {
		if err := atomicfile.Copy(filepath.Join(root, "etc", f), filepath.Join(etc, f), atomicfile.CopyOptions{Mode: 0o644}); err != nil {
			return err
		}
	}
	if err := copyTree(filepath.Join(root, "etc", "skel"), filepath.Join(etc, "skel"), 0, 0); err != nil {
		return err
	}

	pkgs, err := output(ctx, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f", packagesFmt)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, PackageList), []byte(pkgs), 0o644); err != nil {
		return err
	}

	r.stage.Status("mksquashfs base layer")
	if err := r.run(ctx, "mksquashfs", MksquashfsArgs(root, filepath.Join(dir, contract.BaseLayer))...); err != nil {
		return err
	}
	return removeTree(root)
}

// explainBootstrapError names the config key behind a failed mmdebstrap
// when its output shows one: a package the mirror does not have
// (image.packages, image.desktop, cluster.parallel, or image.firmware's
// packages), or a mirror without the firmware component.
func (b *build) explainBootstrapError(err error) error {
	var te *ToolError
	if !errors.As(err, &te) {
		return err
	}
	suite := b.Config.Image.Suite
	for _, line := range te.Tail {
		if m := missingComponentRE.FindStringSubmatch(line); m != nil && m[1] == config.FirmwareComponent {
			return fmt.Errorf("the mirror %s has no %s component, which image.firmware needs: set image.mirror to a full Debian mirror, or image.firmware = false\n%w",
				b.mirror, m[1], err)
		}
	}
	for _, line := range te.Tail {
		if m := unknownPackageRE.FindStringSubmatch(line); m != nil {
			name := m[1] + m[2] + m[3]
			if slices.Contains(FirmwarePackages(b.Config), name) {
				return fmt.Errorf("no package %q in Debian %s's %s component at %s, which image.firmware needs: set image.mirror to a full Debian mirror, or image.firmware = false\n%w",
					name, suite, config.FirmwareComponent, b.mirror, err)
			}
			return fmt.Errorf("no package %q in Debian %s (%s): check image.packages, image.desktop and cluster.parallel\n%w",
				name, suite, b.mirror, err)
		}
	}
	return err
}
