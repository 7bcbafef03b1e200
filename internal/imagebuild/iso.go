package imagebuild

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"

	"github.com/clusterdebian/clusterdebian/imagefiles"
	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// isoRecipe changes whenever the ISO layout changes.
const isoRecipe = 2

// VolumeID is the ISO's volume label.
const VolumeID = "CLUSTERDEBIAN"

// GRUB modules built into the BIOS boot image, so that the menu never
// depends on modules found at run time. UEFI boots Debian's signed GRUB
// (gcdx64), whose modules are built in by Debian: the menu uses none
// beyond them (iso9660, part_msdos, normal, configfile, search, linux,
// echo, test, serial, terminal, sleep, reboot, all_video...), and a
// signed GRUB could load no other.
var grubBIOS = []string{"biosdisk", "linux16", "iso9660", "part_msdos", "part_gpt", "normal", "configfile", "search",
	"search_fs_file", "linux", "chain", "echo", "test", "serial", "terminal", "regexp", "ls",
	"cat", "reboot", "halt", "sleep", "true", "all_video"}

const (
	grubPCDir = "/usr/lib/grub/i386-pc"
	// node1 writes its boot messages where the nodes do, and answers
	// SysRq as they do (contract.ParamSysRq).
	consoleCmdline = contract.Consoles + " " + contract.ParamSysRq
	// node1's live root (overlayfs) can be exported over NFS only with these:
	// index=on gives every file a stable handle across the layers.
	exportCmdline = "overlay.nfs_export=Y overlay.index=Y"
)

// menuCards are the boot menu's choices of cluster interface: node1's
// first, second and third wired card (contract.ParamInterface=N), for a
// node1 with several connected cards that all look alike to the head.
var menuCards = []struct {
	N    int
	Name string
}{{1, "first"}, {2, "second"}, {3, "third"}}

// KernelCmdline returns the live system's kernel parameters after boot=live.
func (b *build) kernelCmdline() string {
	return strings.TrimSpace(consoleCmdline + " " + exportCmdline + " " + b.Config.Image.KernelCmdline)
}

func (b *build) isoKey() string {
	grubVersion, _ := output(context.Background(), "grub-mkimage", "--version")
	return Key("iso", isoRecipe, b.keys[StageBootstrap], b.keys[StageLayer], b.kernelCmdline(),
		b.Config.Image.BootTimeout, imagefiles.Template("grub.cfg.tmpl"), imagefiles.Template("grub-early.cfg.tmpl"),
		strings.TrimSpace(grubVersion), b.version)
}

func render(name string, data any) (string, error) {
	t, err := template.New(name).Parse(imagefiles.Template(name))
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	if err := t.Execute(&sb, data); err != nil {
		return "", err
	}
	return sb.String(), nil
}

func (b *build) iso(ctx context.Context, dir string, r *runner) error {
	tree, err := b.cache.TempDir("iso-tree")
	if err != nil {
		return err
	}
	defer removeTree(tree)
	work, err := b.cache.TempDir("iso-work")
	if err != nil {
		return err
	}
	defer removeTree(work)

	boot := b.dirs[StageBootstrap]
	live := filepath.Join(tree, "live")
	grubDir := filepath.Join(tree, "boot/grub")
	for _, d := range []string{live, grubDir, filepath.Join(tree, ".disk")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// live/ holds what node1 boots and serves to the nodes (the head's
	// boot folder is the medium's live/), and the memory test.
	links := map[string]string{}
	for name, src := range b.netbootFiles() {
		links[src] = filepath.Join(live, name)
	}
	menu := map[string]any{"Version": b.version, "Timeout": b.Config.Image.BootTimeout, "Cmdline": b.kernelCmdline(),
		"InterfaceParam": contract.ParamInterface, "Cards": menuCards}
	for key, name := range map[string]string{"MemtestBIOS": "memtest86+x64.bin", "MemtestEFI": "memtest86+x64.efi"} {
		if _, err := os.Stat(filepath.Join(boot, name)); err == nil {
			links[filepath.Join(boot, name)] = filepath.Join(live, name)
			menu[key] = name
		}
	}
	for src, dst := range links {
		if err := atomicfile.Link(src, dst); err != nil {
			return err
		}
	}

	// A file only this build's medium has, so GRUB finds its own medium even
	// when another ClusterDebian stick is plugged in.
	id := "clusterdebian-" + b.keys[StageISO]
	cfg, err := render("grub.cfg.tmpl", menu)
	if err != nil {
		return err
	}
	early, err := render("grub-early.cfg.tmpl", map[string]string{"ID": id})
	if err != nil {
		return err
	}
	if err := writeFiles(tree, map[string]string{
		"boot/grub/grub.cfg": cfg,
		".disk/" + id:        "",
		".disk/info":         fmt.Sprintf("ClusterDebian %s (Debian %s, amd64)\n", b.version, b.Config.Image.Suite),
	}); err != nil {
		return err
	}
	earlyPath := filepath.Join(work, "early.cfg")
	if err := os.WriteFile(earlyPath, []byte(early), 0o644); err != nil {
		return err
	}

	r.stage.Status("GRUB boot images")
	biosImg := filepath.Join(grubDir, "bios.img")
	if err := r.run(ctx, "grub-mkimage", append([]string{"-O", "i386-pc-eltorito", "-d", grubPCDir, "-p", "/boot/grub",
		"-c", earlyPath, "-o", biosImg}, grubBIOS...)...); err != nil {
		return err
	}
	// The EFI system partition, for Secure Boot with the keys machines
	// ship: \EFI\BOOT\BOOTX64.EFI is Debian's shim (signed by Microsoft),
	// which loads grubx64.efi beside it, Debian's signed GRUB CD image
	// (gcdx64). Its built-in script sources /boot/grub/grub.cfg of the
	// device it was loaded from, here the partition itself: the same early
	// configuration as the BIOS image's, which finds this build's medium
	// and its menu. Appended to the ISO as MBR partition 2 (type 0xef) and
	// named by the UEFI El Torito entry.
	efiFiles := map[string]string{
		"::/EFI/BOOT/BOOTX64.EFI": filepath.Join(boot, efiSubdir, shimEFI),
		"::/EFI/BOOT/grubx64.efi": filepath.Join(boot, efiSubdir, grubCDEFI),
		"::/boot/grub/grub.cfg":   earlyPath,
	}
	var efiBytes int64
	for _, src := range efiFiles {
		fi, err := os.Stat(src)
		if err != nil {
			return err
		}
		efiBytes += fi.Size()
	}
	efiImg := filepath.Join(work, "efi.img")
	kib := max(efiBytes/1024+1024, 2048)
	if err := r.run(ctx, "mkfs.vfat", "-C", "-n", "CDEFI", efiImg, fmt.Sprint(kib)); err != nil {
		return err
	}
	if err := r.run(ctx, "mmd", "-i", efiImg, "::/EFI", "::/EFI/BOOT", "::/boot", "::/boot/grub"); err != nil {
		return err
	}
	for _, dst := range slices.Sorted(maps.Keys(efiFiles)) {
		if err := r.run(ctx, "mcopy", "-i", efiImg, efiFiles[dst], dst); err != nil {
			return err
		}
	}

	r.stage.Status("xorriso")
	return r.run(ctx, "xorriso", xorrisoArgs(tree, efiImg, filepath.Join(dir, ISOName))...)
}

// xorrisoArgs makes one image that boots from CD and USB stick, on BIOS and UEFI:
// El Torito entries for both, GRUB's hybrid MBR boot code, and an MBR partition
// table whose second partition is the EFI system partition.
func xorrisoArgs(tree, efiImg, out string) []string {
	return []string{"-as", "mkisofs",
		"-o", out,
		"-V", VolumeID,
		"-r", "-J", "-joliet-long", "-iso-level", "3",
		"--grub2-mbr", grubPCDir + "/boot_hybrid.img",
		"-partition_offset", "16",
		"--mbr-force-bootable",
		"-append_partition", "2", "0xef", efiImg,
		"-c", "boot/grub/boot.cat",
		"-b", "boot/grub/bios.img", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "--grub2-boot-info",
		"-eltorito-alt-boot",
		"-e", "--interval:appended_partition_2:all::", "-no-emul-boot",
		tree,
	}
}
