// Package contract owns the facts that the head (node1), the nodes and the
// image must agree on, so that each is written once and checked by the
// compiler:
//
//   - how a machine is named after its address (Naming: node<N>);
//   - how a MAC address is written (NormalizeMAC, MACString);
//   - the kernel command line the head gives a node and the node reads back
//     (Cmdline, with Format and ParseCmdline);
//   - the names of the boot files, the image layers and the head's state
//     files, and the nodes' root modes.
//
// It is a leaf: it imports nothing of this module. The initramfs scripts in
// imagefiles/initramfs read the command line and name the node in POSIX sh;
// a unit test there (imagefiles) runs them against this package's rules.
package contract

import (
	"fmt"
	"net"
	"regexp"
	"strings"
)

// RootMode is where a node's root file system comes from (cluster.toml
// nodes.root).
type RootMode string

// The root modes.
const (
	// RootShared: node1's live root over NFS; every node shares it.
	RootShared RootMode = "shared"
	// RootRAM: each node fetches the image layers over HTTP and runs from
	// its own copy in RAM; only /home comes from node1 over NFS.
	RootRAM RootMode = "ram"
)

// RootModes lists the valid root modes, the default first.
var RootModes = []RootMode{RootShared, RootRAM}

// ParseRootMode checks a root mode; "" is the default, RootShared.
func ParseRootMode(s string) (RootMode, error) {
	switch RootMode(s) {
	case "":
		return RootShared, nil
	case RootShared, RootRAM:
		return RootMode(s), nil
	}
	return "", fmt.Errorf("root mode %q is not %q or %q", s, RootShared, RootRAM)
}

// Boot files: what the image builder writes into its netboot folder and the
// ISO's live/ folder, and what the head serves from there.
const (
	// KernelFile is the kernel.
	KernelFile = "vmlinuz"
	// InitrdFile is the live initrd (live-boot): node1 boots it from the
	// medium, and RAM-root nodes over HTTP.
	InitrdFile = "initrd.img"
	// NFSInitrdFile mounts node1's root over NFS (initramfs-tools BOOT=nfs):
	// the shared-root nodes' initrd.
	NFSInitrdFile = "initrd-nfs.img"
	// BaseLayer is the Debian layer, the bottom of the live root's stack.
	BaseLayer = "01-base.squashfs"
	// CustomLayer is the ClusterDebian layer on top of it. It is ext4, not
	// squashfs: overlayfs can only NFS-export a stack whose lower layers
	// have file system UUIDs, and squashfs has none.
	CustomLayer = "02-custom.ext4"
	// NetbootPath is the URL path under which the head's HTTP server serves
	// the boot files: http://<head>/netboot/vmlinuz.
	NetbootPath = "/netboot/"
)

// The loaders the head hands to network boot firmware.
//
// BIOS PXE firmware gets iPXE over TFTP (from Debian's ipxe package).
//
// UEFI PXE firmware gets Debian's Secure Boot chain over TFTP, with or
// without Secure Boot on (DHCP cannot tell which): UEFIPXEBootFile is
// Debian's shim, signed by Microsoft's UEFI CA, which machines trust as
// they ship; shim then loads GRUBNetFile from the same TFTP folder,
// Debian's signed GRUB network image, which reads GRUBNetConfig from the
// head over TFTP and then the machine's own GRUB script (GRUBScriptPath)
// over HTTP. The image build publishes both loaders beside the kernel
// (its netboot folder, the ISO's live/), so node1 serves the very files
// it was built with.
//
// UEFI HTTP-boot firmware gets iPXE (UEFIBootFile) over HTTP. snponly.efi
// drives the NIC through the firmware's own network driver, so it works
// on any UEFI machine that can network boot at all, Secure Boot off.
const (
	BIOSBootFile    = "undionly.kpxe"
	UEFIBootFile    = "snponly.efi"
	UEFIPXEBootFile = "shimx64.efi"
	// GRUBNetFile is the name shim looks for next to itself: its built-in
	// default loader, \grubx64.efi.
	GRUBNetFile = "grubx64.efi"
	// GRUBNetConfig is the TFTP path where Debian's signed GRUB network
	// image (grubnetx64.efi.signed) reads its configuration: its built-in
	// prefix is /grub on the server it was loaded from, and its built-in
	// script sources $prefix/grub.cfg (it first tests for
	// $prefix/x86_64-efi/grub.cfg, which GRUB's test -e cannot see over
	// TFTP). The head writes it into its TFTP root (TFTPDir).
	GRUBNetConfig = "grub/grub.cfg"
)

// ScriptPathPrefix is the URL path under which the head serves each node's
// boot script: /boot/<MAC>.ipxe for iPXE (see ScriptPath), /boot/<MAC>.grub
// for GRUB (see GRUBScriptPath).
const ScriptPathPrefix = "/boot/"

// The boot script kinds, by the suffix of their URL path.
const (
	IPXEScriptSuffix = ".ipxe"
	GRUBScriptSuffix = ".grub"
)

// ScriptPath is the URL path of the iPXE script of the machine with hw, which
// the DHCP server hands to iPXE as its boot file name.
func ScriptPath(hw net.HardwareAddr) string {
	return ScriptPathPrefix + MACString(hw) + IPXEScriptSuffix
}

// GRUBScriptPath is the URL path of the GRUB script of the machine with hw,
// which GRUBNetConfig has GRUB fetch by its own MAC ($net_default_mac,
// written as MACString writes it).
func GRUBScriptPath(hw net.HardwareAddr) string {
	return ScriptPathPrefix + MACString(hw) + GRUBScriptSuffix
}

// InitrdFor returns the initrd a node boots with in a root mode.
func InitrdFor(root RootMode) string {
	if root == RootRAM {
		return InitrdFile
	}
	return NFSInitrdFile
}

// layerRE matches the layer names live-boot stacks (NN-name.squashfs or
// NN-name.ext4, in name order), and nothing a kernel command line or a
// shell would have to quote.
var layerRE = regexp.MustCompile(`^[0-9][0-9]-[A-Za-z0-9_.-]+\.(squashfs|ext4)$`)

// IsLayer reports whether name is an image layer's file name.
func IsLayer(name string) bool { return layerRE.MatchString(name) }

// The head's state: folders and the files in its state folder.
const (
	// StateDir is the head's state folder on node1. It must never be
	// readable through an NFS export: on a live node1 it is a file system
	// of its own (imagefiles' var-lib-clusterdebian.mount), which an export
	// of / does not cross into; on nodes with the shared root the initrd
	// also hides it under a tmpfs, so the files below stay node1's.
	StateDir = "/var/lib/clusterdebian"
	// RunDir holds per-boot state: the machine's SSH host key and
	// certificate, the node name the initrd chose; on node1 also
	// NetworkFile and InterfaceFile.
	RunDir = "/run/clusterdebian"
	// NetworkFile, in RunDir on node1, is the head's account of the
	// cluster network it serves this boot (JSON, registry.Network): which
	// interface and subnet, in which DHCP mode and why. The login banner
	// (clusterdebian issue) reads it; the head serves the same at
	// /api/v1/network.
	NetworkFile = "network.json"
	// InterfaceFile, in RunDir on node1, names the cluster interface the
	// head owns this boot (one line). The image's ifupdown hook
	// (/etc/network/if-pre-up.d/clusterdebian) refuses to start a DHCP
	// client on it, which would fight the head's own.
	InterfaceFile = "interface"
	// LeasesFile holds the DHCP leases.
	LeasesFile = "leases.json"
	// RegistryFile holds the node registry.
	RegistryFile = "nodes.json"
	// TokenFile holds the cluster token (mode 0600).
	TokenFile = "token"
	// BootedFile holds the nodes that booted through the head, whose
	// addresses node1 exports its root (or /home) to.
	BootedFile = "booted.json"
	// TFTPDir is the first TFTP root, searched before the iPXE folder.
	TFTPDir = "tftp"
	// CAKeyFile is the cluster's SSH CA private key (mode 0600);
	// CAKeyFile+".pub" is its public half.
	CAKeyFile = "ssh_ca_ed25519_key"
	// MungeKeyFile is the cluster's munge key (mode 0600), made at the
	// head's first start like the SSH CA, never in the image.
	MungeKeyFile = "munge.key"
	// VerifyFile holds the last `clusterdebian verify` report (JSON,
	// verify.Report), which the status page and /metrics show.
	VerifyFile = "verify.json"
)

// Slurm's per-machine files, under RunDir: written by the head on node1
// and by the agent on a node, read by munged and slurmd through the units'
// drop-ins in imagefiles (root/etc/systemd/system/munge.service.d,
// slurmd.service.d). /run is every machine's own, so the key never sits in
// a file system that node1 exports.
const (
	// MungeRunKey is where munged reads the cluster's munge key (owned by
	// munge, mode 0400), in a folder of munge's own (MungeRunDir, 0700)
	// that also holds munged's random seed.
	MungeRunDir = RunDir + "/munge"
	MungeRunKey = MungeRunDir + "/munge.key"
	// SlurmdEnvFile holds the options this machine's slurmd registers
	// with (its name, the controller, its cores and memory) as systemd
	// environment assignments; slurmd.service starts only where it exists.
	SlurmdEnvFile = RunDir + "/slurmd.env"
)

// Domain is the cluster's private DNS suffix: node3.cluster.
const Domain = "cluster"

// NormalizeMAC checks an Ethernet MAC address and returns it the one way the
// cluster writes it: lower-case, colon-separated ("52:54:00:12:34:56"). It
// accepts what net.ParseMAC accepts ("AA-BB-...", "aabb.ccdd...") of length
// 6, and refuses multicast addresses, which no NIC boots with.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("MAC %q is not an Ethernet address like 52:54:00:12:34:56", s)
	}
	if hw[0]&1 != 0 {
		return "", fmt.Errorf("MAC %s is a multicast address", hw)
	}
	return hw.String(), nil
}

// MACString writes hw as NormalizeMAC does, or "" when hw is not a 6-byte
// Ethernet address.
func MACString(hw net.HardwareAddr) string {
	if len(hw) != 6 {
		return ""
	}
	return hw.String() // net.HardwareAddr.String is lower-case hex with colons
}
