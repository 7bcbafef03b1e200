package head

import (
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
