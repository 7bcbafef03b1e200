package imagebuild

import (
	"slices"

	"github.com/clusterdebian/clusterdebian/internal/config"
)

// basePackages go into every image: the stock kernel, live-boot, the network
// boot and file sharing services, and what a user at a shell expects.
var basePackages = []string{
	"linux-image-amd64", "live-boot", "systemd-sysv",
	"openssh-server", "openssh-client", "nfs-kernel-server", "nfs-common",
	"ipxe", "iproute2", "iputils-ping", "sudo", "man-db", "less", "nano",
	"procps", "psmisc", "ca-certificates", "bash-completion", "memtest86+",
	// node1 forwards the nodes out of its uplink with nftables (NAT).
	"nftables",
	// Lets `clusterdebian vm` run commands in a VM; idle on real hardware.
	"qemu-guest-agent",
	// `mokutil --sb-state` says whether the machine booted with Secure
	// Boot on (the image boots through Debian's signed shim and GRUB).
	"mokutil",
}

// firmwarePackages returns image.firmware's packages for a suite, from the
// non-free-firmware component: the firmware that common wired network
// cards load, and the CPU microcode. Wireless and graphics firmware is left
// out: a cluster is wired, and nodes run no desktop.
//
//   - firmware-realtek: rtl_nic, Realtek's r8169 chips, on most desktop
//     boards;
//   - firmware-bnx2, firmware-bnx2x: Broadcom NetXtreme II (bnx2, bnx2x);
//   - firmware-misc-nonfree: Broadcom NetXtreme (tg3's tigon), Chelsio
//     (cxgb3, cxgb4), Marvell, Intel's e100 before trixie;
//   - firmware-intel-misc (trixie and later): Intel's e100 and ice (E800);
//   - intel-microcode, amd64-microcode: CPU fixes, loaded early from the
//     initrds.
//
// Qualcomm Atheros wired cards (alx, atl1c) and Intel's e1000e and igb need
// no firmware file.
func firmwarePackages(suite string) []string {
	pkgs := []string{"firmware-realtek", "firmware-bnx2", "firmware-bnx2x", "firmware-misc-nonfree",
		"intel-microcode", "amd64-microcode"}
	if suite != "bookworm" {
		pkgs = append(pkgs, "firmware-intel-misc")
	}
	return pkgs
}

// FirmwarePackages returns the firmware and microcode packages the config
// puts into the image (none without image.firmware).
func FirmwarePackages(cfg *config.Config) []string {
	if !cfg.Image.Firmware {
		return nil
	}
	return firmwarePackages(cfg.Image.Suite)
}

// DevelopmentPackages returns the parallel stacks' packages, with the compiler
// that mpicc wraps: these go into the image, and onto a build host with
// `clusterdebian packages`.
func DevelopmentPackages(cfg *config.Config) []string {
	var pkgs []string
	if cfg.HasParallel("mpi") {
		pkgs = append(pkgs, "openmpi-bin", "libopenmpi-dev")
	}
	if cfg.HasParallel("pvm") {
		pkgs = append(pkgs, "pvm", "pvm-dev")
	}
	return append(pkgs, "build-essential")
}

// schedulerPackages returns the job queue's packages (cluster.scheduler):
// Slurm's controller, node daemon and commands, and munge, which
// authenticates them. Its PMIx plugin, for srun of Open MPI programs, is
// in slurm-wlm-basic-plugins (slurmd depends on it: mpi_pmix_v4 in
// bookworm, mpi_pmix_v5 in trixie); on both it loads
// pmix2/lib/libpmix.so, which libpmix-dev has (libopenmpi-dev pulls it in
// with MPI). The head sets MpiDefault=pmix when both are there
// (slurm.PMIxPlugin), so no package is added here for it.
func schedulerPackages(cfg *config.Config) []string {
	if !cfg.HasScheduler(config.SchedulerSlurm) {
		return nil
	}
	return []string{"slurmctld", "slurmd", "slurm-client", "munge"}
}

// desktopPackages returns what a window manager needs for `startx` by a
// user logged in on the console: Xorg runs as that user and gets the
// screen and input devices from systemd-logind, which needs the system
// bus (dbus) and the login session that libpam-systemd registers; without
// them X exits at once ("Server terminated with error (1)"). xterm is the
// terminal the session opens beside the window manager.
func desktopPackages(wm string) []string {
	if wm == "" {
		return nil
	}
	return []string{"xserver-xorg", "xinit", "x11-xserver-utils", "xterm", "dbus", "libpam-systemd", wm}
}

// ImagePackages returns the sorted, de-duplicated package list of the image.
func ImagePackages(cfg *config.Config) []string {
	var pkgs []string
	pkgs = append(pkgs, basePackages...)
	pkgs = append(pkgs, DevelopmentPackages(cfg)...)
	pkgs = append(pkgs, schedulerPackages(cfg)...)
	pkgs = append(pkgs, desktopPackages(cfg.Image.Desktop)...)
	pkgs = append(pkgs, FirmwarePackages(cfg)...)
	pkgs = append(pkgs, cfg.Image.Packages...)
	slices.Sort(pkgs)
	return slices.Compact(pkgs)
}
