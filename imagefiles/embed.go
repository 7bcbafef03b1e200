// Package imagefiles holds, in one visible folder, the files that go into a
// ClusterDebian image: root/ is copied into the image's root file system as it
// is (systemd units, motd, man pages), templates/ are rendered at build, boot
// or install time (the login banner, the boot menu, the head's unit that
// localnode1 installs on a Debian host), initramfs/ goes into the nodes'
// initrds (the NFS root's and live-boot's), hooks/ are the shell hooks
// mmdebstrap runs while it makes the image's root, and desktop/ goes into
// images with a window manager (image.desktop).
package imagefiles

import (
	"embed"
	"io/fs"
	"strings"
)

//go:embed all:root
var rootFS embed.FS

// IfupdownHook refuses ifupdown's DHCP client on the interface node1's head
// owns: see root/etc/network/if-pre-up.d/clusterdebian.
//
//go:embed root/etc/network/if-pre-up.d/clusterdebian
var IfupdownHook string

//go:embed templates
var templatesFS embed.FS

//go:embed hooks
var hooksFS embed.FS

// NodeInitramfsScript is the initramfs-tools script (scripts/nfs-bottom) that
// makes node1's shared root safe for one node: see initramfs/clusterdebian-node.
//
//go:embed initramfs/clusterdebian-node
var NodeInitramfsScript string

// LiveLayersScript extends live-boot so that a node with the RAM root fetches
// every layer of the image, not just the first: see initramfs/live-layers.sh.
//
//go:embed initramfs/live-layers.sh
var LiveLayersScript string

// XsessionTerminal is the Xsession.d script of an image with a window
// manager: a terminal beside it (see desktop/95clusterdebian-terminal).
//
//go:embed desktop/95clusterdebian-terminal
var XsessionTerminal string

// XsessionTerminalPath is where XsessionTerminal goes in the image.
const XsessionTerminalPath = "etc/X11/Xsession.d/95clusterdebian-terminal"

// Root returns the tree copied into the image root.
func Root() fs.FS {
	sub, err := fs.Sub(rootFS, "root")
	if err != nil {
		panic(err)
	}
	return sub
}

// Template returns the text of templates/name.
func Template(name string) string {
	b, err := templatesFS.ReadFile("templates/" + name)
	if err != nil {
		panic("imagefiles: no template " + name)
	}
	return string(b)
}

// Hook returns the text of hooks/name: a POSIX sh script that mmdebstrap runs
// with sh -c, the new root as $1.
func Hook(name string) string {
	b, err := hooksFS.ReadFile("hooks/" + name)
	if err != nil {
		panic("imagefiles: no hook " + name)
	}
	return string(b)
}

// Mode returns the file mode a file of Root() gets in the image. embed does not
// keep modes, so executables are listed here.
func Mode(path string) fs.FileMode {
	if strings.HasPrefix(path, "usr/local/bin/") || strings.HasPrefix(path, "usr/local/sbin/") || strings.HasSuffix(path, ".sh") ||
		strings.HasPrefix(path, "etc/network/if-pre-up.d/") {
		return 0o755
	}
	return 0o644
}
