package head

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strings"
	"text/template"
)

// Root modes of the nodes (cluster.toml nodes.root).
const (
	RootShared = "shared" // node1's live root over NFS
	RootRAM    = "ram"    // each node fetches the squashfs and runs from RAM
)

// Kernel and initrd names in the boot folder, as the image builder and the
// live medium name them.
const (
	KernelFile = "vmlinuz"
	InitrdFile = "initrd.img"
	// NodeInitrdFile mounts node1's root over NFS (the shared root); the
	// live initrd (InitrdFile) runs the image from RAM.
	NodeInitrdFile = "initrd-nfs.img"
	BaseLayer      = "01-base.squashfs"
)

// Command-line parameters the node side reads.
const (
	ParamRole  = "clusterdebian.role=node"
	ParamHead  = "clusterdebian.head="
	ParamToken = "clusterdebian.token="
	// ParamRAMRoot tells the node's initrd and agent that the root is its
	// own copy in RAM: /home comes from node1 over NFS, and the agent writes
	// the cluster files itself.
	ParamRAMRoot = "clusterdebian.root=ram"
	// ParamLayers names the image layers after the base that live-boot
	// fetches too (imagefiles/initramfs/live-layers.sh).
	ParamLayers = "clusterdebian.layers="
)

// Layers returns the image layers in bootDir that stack on the base layer
// (02-custom.ext4, ...), in the order live-boot stacks them: by name.
func Layers(bootDir string) ([]string, error) {
	entries, err := os.ReadDir(bootDir)
	if err != nil {
		return nil, err
	}
	var layers []string
	for _, e := range entries {
		name := e.Name()
		if name == BaseLayer || !e.Type().IsRegular() || !layerRE.MatchString(name) {
			continue
		}
		layers = append(layers, name)
	}
	sort.Strings(layers)
	return layers, nil
}

// layerRE matches the names live-boot stacks (NN-name.squashfs or .ext4),
// and nothing a kernel command line would have to quote.
var layerRE = regexp.MustCompile(`^[0-9][0-9]-[A-Za-z0-9_.-]+\.(squashfs|ext4)$`)

// Cmdline returns a node's kernel command line.
//
// The consoles come first so that a node's boot messages reach both a serial
// line (VMs, server racks) and the screen; the last console= is the one
// /dev/console is, and a person at a node looks at the screen.
//
// For the shared root, nfsroot names the export of node1's whole live root
// (NFSv3 over TCP: the initramfs mounter speaks only v2/v3) and ip=dhcp has
// the initramfs configure the boot NIC (Debian's kernel does no IP
// autoconfiguration itself). For the RAM root, live-boot fetches the base
// layer over HTTP, and the other layers through ParamLayers.
func Cmdline(head netip.Addr, httpBase, token, root string, layers []string, extra string) string {
	p := []string{
		"console=ttyS0,115200n8", "console=tty0",
		ParamRole, ParamHead + head.String(), ParamToken + token,
	}
	switch root {
	case RootRAM:
		p = append(p, ParamRAMRoot, "boot=live", "fetch="+httpBase+"/netboot/"+BaseLayer, "ip=dhcp")
		if len(layers) > 0 {
			p = append(p, ParamLayers+strings.Join(layers, ","))
		}
	default:
		p = append(p, "root=/dev/nfs", "nfsroot="+head.String()+":/,vers=3,tcp", "ip=dhcp", "rw")
	}
	if extra = strings.TrimSpace(extra); extra != "" {
		p = append(p, extra)
	}
	return strings.Join(p, " ")
}

// CheckCmdline rejects extra kernel parameters that would change the iPXE
// script rather than the kernel's command line: line breaks start a new
// script command, "${...}" expands iPXE settings, and "||", "&&" chain
// commands. Quotes and backslashes are refused too, as in cluster.toml.
func CheckCmdline(extra string) error {
	for _, r := range extra {
		if r < ' ' || r == 0x7f || strings.ContainsRune("\"'`$\\;&|", r) {
			return fmt.Errorf("%q must be plain kernel parameters, without quotes, line breaks or the characters $ \\ ; & |", extra)
		}
	}
	return nil
}

// scriptTemplate is the iPXE script every node gets. initrd=<name> on the
// kernel line lets the kernel's EFI stub find the initrd that iPXE holds
// under that name when booting on UEFI; BIOS boots ignore it.
var scriptTemplate = template.Must(template.New("ipxe").Parse(`#!ipxe
echo ClusterDebian: booting {{.Name}} ({{.MAC}}) from head {{.Head}}
kernel {{.Base}}/netboot/` + KernelFile + ` initrd={{.Initrd}} {{.Cmdline}}
initrd {{.Base}}/netboot/{{.Initrd}}
boot
`))

// scriptData fills scriptTemplate.
type scriptData struct {
	Name, MAC, Head, Base, Cmdline, Initrd string
}

// InitrdFor returns the initrd nodes boot with a root mode.
func InitrdFor(root string) string {
	if root == RootRAM {
		return InitrdFile
	}
	return NodeInitrdFile
}

// Script renders the iPXE script for the node with mac at addr, booting the
// live initrd.
func Script(mac net.HardwareAddr, addr, head netip.Addr, httpBase, cmdline string) (string, error) {
	return ScriptWith(mac, addr, head, httpBase, cmdline, InitrdFile)
}

// ScriptWith renders the iPXE script with the given initrd (see InitrdFor).
func ScriptWith(mac net.HardwareAddr, addr, head netip.Addr, httpBase, cmdline, initrd string) (string, error) {
	var b strings.Builder
	err := scriptTemplate.Execute(&b, scriptData{
		Name: NodeName(addr), MAC: strings.ToLower(mac.String()), Head: head.String(), Base: httpBase, Cmdline: cmdline, Initrd: initrd,
	})
	return b.String(), err
}

// NodeName names a node after the last octet of its IPv4 address: node<N>.
func NodeName(addr netip.Addr) string {
	addr = addr.Unmap()
	if !addr.Is4() {
		return "node"
	}
	return fmt.Sprintf("node%d", addr.As4()[3])
}
