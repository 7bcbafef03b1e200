package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
)

// An installed Debian machine, as opposed to the live ISO: a root file
// system made with mmdebstrap into an ext4 disk image, booted with QEMU's
// -kernel and -initrd (the kernel and initrd taken out of that root) and
// root=/dev/vda, so no boot loader needs installing. The localnode1 tests
// turn such a machine into a permanent node1.

// DefaultDiskCache is where installed-system disk images are kept between
// runs, one folder per key of their inputs.
const DefaultDiskCache = "/var/cache/clusterdebian/vmdisk"

// Names of the files of a cached disk.
const (
	DiskImageFile  = "disk.raw"
	DiskKernelFile = "vmlinuz"
	DiskInitrdFile = "initrd.img"
)

// diskFormat changes whenever the way a disk is made changes, so that old
// cache entries are not reused.
const diskFormat = "1"

// DiskOptions describe an installed Debian system.
type DiskOptions struct {
	Suite    string   // default trixie
	Mirror   string   // Debian mirror URL; required
	Packages []string // installed besides the essential ones
	// Hooks are mmdebstrap --customize-hook commands ("$1" is the root),
	// run after the packages: users, network configuration, fstab.
	Hooks   []string
	SizeMiB int    // the ext4 image's size; default 4096
	Cache   string // default DefaultDiskCache
	// Log gets mmdebstrap's output; nil discards it.
	Log io.Writer
}

// Disk is a cached installed system: a raw ext4 image whose file system
// is the whole disk (root=/dev/vda), and its kernel and initrd.
type Disk struct {
	Dir, Image, Kernel, Initrd string
	// Cached says the disk was already there (not built by this call).
	Cached bool
}

// Key is the cache key of the options: every input that changes the disk.
func (o DiskOptions) Key() string {
	h := sha256.New()
	pkgs := slices.Clone(o.Packages)
	slices.Sort(pkgs)
	fmt.Fprintf(h, "format %s\nsuite %s\nmirror %s\nsize %d\npackages %s\n", diskFormat, o.Suite, o.Mirror, o.SizeMiB, strings.Join(pkgs, ","))
	for _, hk := range o.Hooks {
		fmt.Fprintf(h, "hook %q\n", hk)
	}
	return hex.EncodeToString(h.Sum(nil))[:24]
}

func (o *DiskOptions) defaults() error {
	if o.Suite == "" {
		o.Suite = "trixie"
	}
	if o.SizeMiB == 0 {
		o.SizeMiB = 4096
	}
	if o.Cache == "" {
		o.Cache = DefaultDiskCache
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Mirror == "" {
		return errors.New("vm disk: no Debian mirror")
	}
	return nil
}

// InstalledDisk returns the disk for o from the cache, building it first
// when it is not there: mmdebstrap into a scratch folder, mkfs.ext4 -d to
// turn that folder into the image, and the kernel and initrd copied out. A
// finished entry is renamed into place whole, so a crash leaves no half disk.
func InstalledDisk(ctx context.Context, o DiskOptions) (*Disk, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	dir := filepath.Join(o.Cache, o.Key())
	d := &Disk{Dir: dir, Image: filepath.Join(dir, DiskImageFile),
		Kernel: filepath.Join(dir, DiskKernelFile), Initrd: filepath.Join(dir, DiskInitrdFile)}
	if complete(d) {
		d.Cached = true
		return d, nil
	}
	for _, tool := range []string{"mmdebstrap", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("vm disk: %s not found (apt-get install mmdebstrap e2fsprogs)", tool)
		}
	}
	if err := os.MkdirAll(o.Cache, 0o755); err != nil {
		return nil, err
	}
	scratch, err := os.MkdirTemp(o.Cache, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	root := filepath.Join(scratch, "root")
	args := []string{"--mode=root", "--variant=minbase",
		"--aptopt=Acquire::Retries \"3\"",
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
	}
	if len(o.Packages) > 0 {
		args = append(args, "--include="+strings.Join(o.Packages, ","))
	}
	for _, hk := range o.Hooks {
		args = append(args, "--customize-hook="+hk)
	}
	args = append(args, o.Suite, root, o.Mirror)
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("vm disk: mmdebstrap %s: %w (its output is in the test log)", o.Suite, err)
	}
	out := filepath.Join(scratch, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return nil, err
	}
	for pattern, name := range map[string]string{"vmlinuz-*": DiskKernelFile, "initrd.img-*": DiskInitrdFile} {
		m, _ := filepath.Glob(filepath.Join(root, "boot", pattern))
		if len(m) == 0 {
			return nil, fmt.Errorf("vm disk: no /boot/%s in the new root (is linux-image-amd64 in Packages?)", pattern)
		}
		slices.Sort(m)
		if err := atomicfile.Copy(m[len(m)-1], filepath.Join(out, name), atomicfile.CopyOptions{Mode: 0o644}); err != nil {
			return nil, err
		}
	}
	mkfs := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "root", "-d", root,
		filepath.Join(out, DiskImageFile), strconv.Itoa(o.SizeMiB)+"M")
	if b, err := mkfs.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vm disk: mkfs.ext4 -d: %v: %s", err, strings.TrimSpace(string(b)))
	}
	os.RemoveAll(dir) // an incomplete entry from an older crash
	if err := os.Rename(out, dir); err != nil {
		return nil, err
	}
	return d, nil
}

// complete says whether every file of d is there.
func complete(d *Disk) bool {
	for _, p := range []string{d.Image, d.Kernel, d.Initrd} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			return false
		}
	}
	return true
}

// Overlay makes a qcow2 file at path whose writes stay there, backed by the
// cached image, so one cached disk serves every run unchanged.
func (d *Disk) Overlay(ctx context.Context, path string) error {
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", d.Image, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img create %s: %v: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// BootArgs are QEMU's arguments to boot the disk's kernel directly, with
// the root on the first virtio disk (Spec.Disk) and the console on the
// serial line; extra is added to the kernel command line.
func (d *Disk) BootArgs(extra string) []string {
	cmdline := strings.TrimSpace("root=/dev/vda rw console=ttyS0,115200n8 " + extra)
	return []string{"-kernel", d.Kernel, "-initrd", d.Initrd, "-append", cmdline}
}

// UserNIC returns QEMU's arguments for a NIC on QEMU's user-mode network
// (10.0.2.0/24, gateway 10.0.2.2) with restrict=on: the guest has a default
// route, as on a lab LAN, but no packet leaves QEMU.
func UserNIC(id, mac string) []string {
	return []string{"-netdev", "user,id=" + id + ",restrict=on",
		"-device", "virtio-net-pci,netdev=" + id + ",mac=" + mac}
}

// ShareDir returns QEMU's arguments to share the host folder dir read-only
// with the guest, which mounts it with
// `mount -t 9p -o trans=virtio,ro TAG /mnt`.
func ShareDir(tag, dir string) []string {
	return []string{"-virtfs", "local,path=" + qemuValue(dir) + ",mount_tag=" + tag + ",security_model=none,readonly=on"}
}
