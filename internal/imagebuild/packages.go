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
// in slurm-wlm-basic-plugins; on bookworm it loads libpmix.so, which
// libpmix-dev has (libopenmpi-dev pulls it in with MPI).
func schedulerPackages(cfg *config.Config) []string {
	if !cfg.HasScheduler(config.SchedulerSlurm) {
		return nil
	}
	return []string{"slurmctld", "slurmd", "slurm-client", "munge"}
}

// desktopPackages returns what a window manager needs for `startx`.
func desktopPackages(wm string) []string {
	if wm == "" {
		return nil
	}
	return []string{"xserver-xorg", "xinit", "x11-xserver-utils", "xterm", wm}
}

// ImagePackages returns the sorted, de-duplicated package list of the image.
func ImagePackages(cfg *config.Config) []string {
	var pkgs []string
	pkgs = append(pkgs, basePackages...)
	pkgs = append(pkgs, DevelopmentPackages(cfg)...)
	pkgs = append(pkgs, schedulerPackages(cfg)...)
	pkgs = append(pkgs, desktopPackages(cfg.Image.Desktop)...)
	pkgs = append(pkgs, cfg.Image.Packages...)
	slices.Sort(pkgs)
	return slices.Compact(pkgs)
}
