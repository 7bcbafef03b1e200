// Package hosttools knows which Debian tools each part of clusterdebian needs on
// the machine it runs on, finds the missing ones, and installs them with apt.
package hosttools

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
)

// Purpose groups tools by what needs them.
type Purpose string

const (
	Build Purpose = "build" // clusterdebian build
	VM    Purpose = "vm"    // clusterdebian vm, and the end-to-end tests
	Test  Purpose = "test"  // protocol tests and benchmarks against reference servers
)

// Purposes lists every purpose, in order.
var Purposes = []Purpose{Build, VM, Test}

// ParsePurpose checks a purpose's name.
func ParsePurpose(s string) (Purpose, error) {
	if slices.Contains(Purposes, Purpose(s)) {
		return Purpose(s), nil
	}
	return "", fmt.Errorf("unknown purpose %q; use %s, %s or %s", s, Build, VM, Test)
}

// Tool is one thing that must exist on the host: a command or a file, and the
// Debian package that provides it.
type Tool struct {
	Name    string // what the user knows it as
	Path    string // a command name (looked up in PATH), or absolute file paths separated by ':', any of which will do (files that moved between Debian releases)
	Package string
	Purpose Purpose
	Why     string
}

// Tools is the full list.
var Tools = []Tool{
	{"mmdebstrap", "mmdebstrap", "mmdebstrap", Build, "bootstraps the Debian root"},
	{"debian-archive-keyring", "/usr/share/keyrings/debian-archive-keyring.gpg", "debian-archive-keyring", Build, "verifies Debian's archive"},
	{"mksquashfs", "mksquashfs", "squashfs-tools", Build, "compresses the root into squashfs layers"},
	{"unsquashfs", "unsquashfs", "squashfs-tools", Build, "checks squashfs layers"},
	{"xorriso", "xorriso", "xorriso", Build, "writes the hybrid ISO"},
	{"grub-mkimage", "grub-mkimage", "grub-common", Build, "makes the GRUB boot images"},
	{"GRUB for BIOS", "/usr/lib/grub/i386-pc/boot_hybrid.img", "grub-pc-bin", Build, "BIOS boot from CD and USB"},
	{"mkfs.vfat", "mkfs.vfat", "dosfstools", Build, "makes the EFI system partition"},
	{"mkfs.ext4", "mkfs.ext4", "e2fsprogs", Build, "makes the customization layer"},
	{"mcopy", "mcopy", "mtools", Build, "fills the EFI system partition"},
	{"unshare", "unshare", "util-linux", Build, "keeps the bootstrap's mounts and processes contained"},
	{"openssl", "openssl", "openssl", Build, "hashes user passwords"},
	{"qemu-system-x86_64", "qemu-system-x86_64", "qemu-system-x86", VM, "runs cluster VMs"},
	{"qemu-img", "qemu-img", "qemu-utils", VM, "makes VM disks"},
	{"OVMF", "/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf", VM, "UEFI firmware for VMs"},
	{"OVMF with Secure Boot", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "ovmf", VM, "UEFI firmware with Secure Boot on and Microsoft's keys (vm up --secure-boot)"},
	// Debian 12 keeps ipxe-qemu's ROMs in /usr/lib/ipxe/qemu, 13 in QEMU's own folder.
	{"iPXE ROMs", "/usr/lib/ipxe/qemu/efi-virtio.rom:/usr/share/qemu/efi-virtio.rom", "ipxe-qemu", VM, "network boot ROMs for VM NICs"},
	{"iPXE binaries", "/usr/lib/ipxe/undionly.kpxe", "ipxe", VM, "PXE boot files served to nodes"},
	{"ip", "ip", "iproute2", VM, "network namespaces, bridges and taps"},
	{"dnsmasq", "dnsmasq", "dnsmasq-base", VM, "the DHCP and DNS servers of vm up --lan and --uplink; a foreign DHCP server for proxy tests"},
	{"busybox", "/bin/busybox", "busybox-static", VM, "the outside's web server of vm up --lan and --uplink; tiny initrds for netboot tests"},
	{"tftp", "tftp", "tftp-hpa", Test, "TFTP client for protocol tests"},
	{"in.tftpd", "in.tftpd", "tftpd-hpa", Test, "reference TFTP server for benchmarks"},

	{"udhcpc", "udhcpc", "udhcpc", Test, "standard DHCP client for protocol tests"},
	{"tcpdump", "tcpdump", "tcpdump", Test, "packet captures in protocol tests"},
	{"nft", "nft", "nftables", Test, "the head's NAT rules in its uplink test"},
	{"curl", "curl", "curl", Test, "HTTP client for protocol tests"},
	{"nginx", "nginx", "nginx-light", Test, "reference HTTP server for benchmarks"},

	{"cpio", "cpio", "cpio", Test, "packs test initrds"},
	{"debugfs", "debugfs", "e2fsprogs", Test, "reads the customization layer in tests"},
	{"zstd", "zstd", "zstd", Test, "reads the initrds in the firmware test"},
	{"sshd", "/usr/sbin/sshd", "openssh-server", Test, "a real sshd for SSH trust tests"},
	{"ssh-keygen", "ssh-keygen", "openssh-client", Test, "checks host certificates in tests"},
	{"chromium", "chromium", "chromium", Test, "headless browser for the status page test"},
	{"pdsh", "pdsh", "pdsh", Test, "reference parallel shell for the exec benchmark"},
	{"unzip", "unzip", "unzip", Test, "unpacks Go toolchains in the tests of scripts/lib.sh"},
	{"mpicc", "mpicc", "libopenmpi-dev", Test, "builds verify's MPI program on this machine (TestMPIOnThisMachine)"},
	{"mpirun", "mpirun", "openmpi-bin", Test, "runs verify's MPI program on this machine"},
	{"gcc", "gcc", "gcc", Test, "the C compiler mpicc calls"},
}

// For returns the tools needed for the given purposes.
func For(purposes ...Purpose) []Tool {
	var out []Tool
	for _, t := range Tools {
		if slices.Contains(purposes, t.Purpose) {
			out = append(out, t)
		}
	}
	return out
}

// Present reports whether the tool exists on this host.
func (t Tool) Present() bool {
	if strings.HasPrefix(t.Path, "/") {
		for p := range strings.SplitSeq(t.Path, ":") {
			if _, err := os.Stat(p); err == nil {
				return true
			}
		}
		return false
	}
	_, err := exec.LookPath(t.Path)
	if err != nil {
		// root's PATH may lack /usr/sbin under sudo-less shells.
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, err := os.Stat(dir + "/" + t.Path); err == nil {
				return true
			}
		}
	}
	return err == nil
}

// Missing returns the tools among ts that are not on the host.
func Missing(ts []Tool) []Tool {
	var out []Tool
	for _, t := range ts {
		if !t.Present() {
			out = append(out, t)
		}
	}
	return out
}

// Packages returns the sorted, de-duplicated packages that provide ts.
func Packages(ts []Tool) []string {
	set := map[string]bool{}
	for _, t := range ts {
		set[t.Package] = true
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// MissingError explains which tools are missing and how to get them.
type MissingError struct{ Tools []Tool }

func (e *MissingError) Error() string {
	var b strings.Builder
	b.WriteString("missing host tools:")
	for _, t := range e.Tools {
		fmt.Fprintf(&b, "\n  %s (package %s): %s", t.Name, t.Package, t.Why)
	}
	fmt.Fprintf(&b, "\ninstall them with: apt-get install %s", strings.Join(Packages(e.Tools), " "))
	return b.String()
}

// Require returns a *MissingError when any of ts is missing.
func Require(ts []Tool) error {
	if m := Missing(ts); len(m) > 0 {
		return &MissingError{Tools: m}
	}
	return nil
}

// AptInstall installs packages non-interactively, running apt-get update first
// when the package lists look empty or stale. Output goes to w.
func AptInstall(ctx context.Context, w io.Writer, packages ...string) error {
	if len(packages) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("installing %s needs root; run: sudo apt-get install %s",
			strings.Join(packages, " "), strings.Join(packages, " "))
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
		return nil
	}
	// Tools, not services: packages such as openssh-server, nginx or
	// tftpd-hpa would start daemons listening on this machine. A policy-rc.d
	// that says no keeps them from starting while they install, and those
	// that were not here before are disabled afterwards.
	newServices := servicesNotInstalled(packages)
	if _, err := os.Stat(policyRCD); os.IsNotExist(err) {
		if err := os.WriteFile(policyRCD, []byte("#!/bin/sh\n# clusterdebian: installing tools, not starting services\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policyRCD)
		}
	}
	install := append([]string{"install", "-y", "--no-install-recommends"}, packages...)
	err := run(install...)
	if err != nil {
		// The usual cause of failure on a fresh machine is missing package lists.
		if err := run("update"); err != nil {
			return err
		}
		err = run(install...)
	}
	for _, unit := range newServices {
		exec.CommandContext(ctx, "systemctl", "disable", "--now", unit).Run()
	}
	return err
}

const policyRCD = "/usr/sbin/policy-rc.d"

// serviceUnits are the daemons some tool packages bring along.
var serviceUnits = map[string]string{
	"openssh-server": "ssh.service",
	"nginx-light":    "nginx.service",
	"tftpd-hpa":      "tftpd-hpa.service",
}

// servicesNotInstalled returns the daemons of packages that are not installed
// yet (so disabling them afterwards takes away nothing the machine had).
func servicesNotInstalled(packages []string) []string {
	var units []string
	for _, p := range packages {
		unit, ok := serviceUnits[p]
		if !ok {
			continue
		}
		out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", p).Output()
		if err != nil || !strings.Contains(string(out), "install ok installed") {
			units = append(units, unit)
		}
	}
	return units
}

// HostSuite returns the Debian codename of this host (for example "bookworm"),
// or "" when it cannot be told.
func HostSuite() string {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VERSION_CODENAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}
