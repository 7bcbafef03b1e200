package head

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"text/template"

	"github.com/clusterdebian/clusterdebian/internal/contract"
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
		if name == contract.BaseLayer || !e.Type().IsRegular() || !contract.IsLayer(name) {
			continue
		}
		layers = append(layers, name)
	}
	sort.Strings(layers)
	return layers, nil
}

// scriptTemplate is the iPXE script every node gets. initrd=<name> on the
// kernel line lets the kernel's EFI stub find the initrd that iPXE holds
// under that name when booting on UEFI; BIOS boots ignore it.
var scriptTemplate = template.Must(template.New("ipxe").Parse(`#!ipxe
echo ClusterDebian: booting {{.Name}} ({{.MAC}}) from head {{.Head}}
kernel {{.Base}}` + contract.NetbootPath + contract.KernelFile + ` initrd={{.Initrd}} {{.Cmdline}}
initrd {{.Base}}` + contract.NetbootPath + `{{.Initrd}}
boot
`))

// scriptData fills scriptTemplate.
type scriptData struct {
	Name, MAC, Head, Base, Cmdline, Initrd string
}

// Script renders the iPXE script for the node called name, with mac, that
// boots with the command line c.
func Script(name string, mac net.HardwareAddr, c contract.Cmdline) (string, error) {
	var b strings.Builder
	err := scriptTemplate.Execute(&b, scriptData{
		Name: name, MAC: contract.MACString(mac), Head: c.Head.String(), Base: c.HTTPBase(),
		Cmdline: c.Format(), Initrd: contract.InitrdFor(c.Root),
	})
	return b.String(), err
}

// grubDevice is the GRUB device of the head's HTTP server, (http,ADDR), with
// the port after the address when it is not 80.
func grubDevice(c contract.Cmdline) string {
	if p := c.Port(); p != 80 {
		return fmt.Sprintf("(http,%s:%d)", c.Head, p)
	}
	return "(http," + c.Head.String() + ")"
}

// grubQuote quotes one word for GRUB's shell-like script language: single
// quotes keep everything literal, and contract.CheckExtra keeps quotes out
// of every kernel parameter.
func grubQuote(w string) string {
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

// GRUBNetConfig returns the configuration Debian's signed GRUB network image
// reads over TFTP (contract.GRUBNetConfig) when a UEFI PXE client boots
// through shim: it asks the head over HTTP for the machine's own GRUB
// script, by the MAC GRUB booted with, as iPXE asks for its script. It
// names the head by address, so that it does not depend on what the
// firmware's DHCP exchange left GRUB (a proxyDHCP offer carries the head's
// address where the DHCP server's answer does not).
func GRUBNetConfig(c contract.Cmdline) string {
	dev := grubDevice(c)
	return `# ClusterDebian: written by node1's head at its start, and read over TFTP
# by Debian's signed GRUB, which shim loaded on a UEFI PXE client. Each
# machine's boot entry comes from the head by its MAC, as iPXE's script does.
set timeout=0
echo "ClusterDebian: asking the head ` + c.Head.String() + ` for the boot entry of ${net_default_mac}"
configfile ` + dev + contract.ScriptPathPrefix + `${net_default_mac}` + contract.GRUBScriptSuffix + `
echo "ClusterDebian: the head ` + c.Head.String() + ` gave no boot entry for ${net_default_mac}; its journal says why (journalctl -u clusterdebian-head)"
sleep 30
reboot
`
}

// GRUBScript renders the GRUB script for the node called name, with mac,
// that boots with the command line c: the iPXE script's kernel, initrd and
// command line, fetched by GRUB over HTTP. GRUB hands the initrd to the
// kernel itself, so the kernel line needs no initrd= here.
func GRUBScript(name string, mac net.HardwareAddr, c contract.Cmdline) string {
	dev := grubDevice(c)
	var args []string
	for _, w := range strings.Fields(c.Format()) {
		args = append(args, grubQuote(w))
	}
	return "echo " + grubQuote(fmt.Sprintf("ClusterDebian: booting %s (%s) from head %s", name, contract.MACString(mac), c.Head)) + `
echo 'Loading the kernel...'
linux ` + dev + contract.NetbootPath + contract.KernelFile + " " + strings.Join(args, " ") + `
echo 'Loading the initial RAM disk...'
initrd ` + dev + contract.NetbootPath + contract.InitrdFor(c.Root) + `
boot
`
}
