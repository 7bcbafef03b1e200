package head

import (
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/netboot/httpboot"
)

// grubWords splits a GRUB command line whose words are all single-quoted
// (as GRUBScript writes the kernel parameters) back into its words.
func grubWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	for _, m := range regexp.MustCompile(`'([^']*)'|(\S+)`).FindAllStringSubmatch(line, -1) {
		words = append(words, m[1]+m[2])
	}
	return words
}

// TestGRUBScriptMatchesIPXE: the GRUB script of the Secure Boot chain boots
// the same kernel and initrd with the same command line as the iPXE
// script, through the same gate, and names the node the same way.
func TestGRUBScriptMatchesIPXE(t *testing.T) {
	h := gateHead(t, dhcp.ModeServer, dhcp.Lease{MAC: "52:54:00:00:00:2a", IP: addr("10.99.0.42"), Expires: time.Now().Add(time.Hour)})
	h.cmdline.Extra = []string{"quiet", "x={y}#z"}
	hw, _ := net.ParseMAC("52:54:00:00:00:2a")
	ipxe, err := h.script(hw, addr("10.99.0.42"))
	must(t, err)
	grub, err := h.grubScript(hw, addr("10.99.0.42"))
	must(t, err)
	t.Logf("GRUB script:\n%s", grub)

	m := regexp.MustCompile(`(?m)^kernel (\S+) initrd=(\S+) (.*)$`).FindStringSubmatch(ipxe)
	if m == nil {
		t.Fatalf("no kernel line in the iPXE script:\n%s", ipxe)
	}
	ipxeCmdline := m[3]
	lines := strings.Split(strings.TrimSpace(grub), "\n")
	var linux, initrd []string
	for _, l := range lines {
		switch w := grubWords(t, l); w[0] {
		case "linux":
			linux = w
		case "initrd":
			initrd = w
		}
	}
	if len(linux) < 2 || linux[1] != "(http,"+lanHead.String()+")"+contract.NetbootPath+contract.KernelFile {
		t.Fatalf("GRUB script's linux line %q, want the kernel from the head over HTTP", linux)
	}
	if got := strings.Join(linux[2:], " "); got != ipxeCmdline {
		t.Errorf("GRUB command line\n%s\nwant the iPXE script's\n%s", got, ipxeCmdline)
	}
	if len(initrd) != 2 || initrd[1] != "(http,"+lanHead.String()+")"+contract.NetbootPath+contract.NFSInitrdFile {
		t.Errorf("GRUB script's initrd line %q, want the NFS-root initrd from the head", initrd)
	}
	if lines[len(lines)-1] != "boot" {
		t.Errorf("GRUB script does not end with boot:\n%s", grub)
	}
	if !strings.Contains(grub, "booting "+wantPrefix+"42 (52:54:00:00:00:2a)") || !strings.Contains(ipxeCmdline, "BOOTIF=01-52-54-00-00-00-2a") {
		t.Errorf("GRUB script does not name the node, or the command line lacks BOOTIF:\n%s", grub)
	}
	if _, err := h.grubScript(hw, addr("10.99.0.43")); !errors.Is(err, httpboot.ErrForbidden) {
		t.Errorf("GRUB script from another address: %v, want ErrForbidden", err)
	}
	other, _ := net.ParseMAC("52:54:00:00:00:2b")
	if _, err := h.grubScript(other, addr("10.99.0.44")); !errors.Is(err, httpboot.ErrForbidden) {
		t.Errorf("GRUB script for a machine without a DHCP exchange: %v, want ErrForbidden", err)
	}
}

// TestGRUBNetConfig: the configuration GRUB reads over TFTP sends it to
// the head's own script path for its MAC, by the head's address (port 80
// or not), and reboots when the head gives nothing.
func TestGRUBNetConfig(t *testing.T) {
	c := contract.Cmdline{Node: true, Head: netip.MustParseAddr("192.168.50.37"), Token: "tok"}
	hw, _ := net.ParseMAC("52:54:00:00:00:07")
	for _, tc := range []struct {
		port uint16
		dev  string
	}{{0, "(http,192.168.50.37)"}, {80, "(http,192.168.50.37)"}, {8080, "(http,192.168.50.37:8080)"}} {
		c.HTTPPort = tc.port
		cfg := GRUBNetConfig(c)
		want := "configfile " + tc.dev + strings.Replace(contract.GRUBScriptPath(hw), "52:54:00:00:00:07", "${net_default_mac}", 1)
		if !strings.Contains(cfg, want+"\n") || !strings.HasSuffix(cfg, "reboot\n") {
			t.Errorf("port %d: GRUB's configuration lacks %q, or does not end by rebooting:\n%s", tc.port, want, cfg)
		}
		if strings.Contains(GRUBScript("node7", hw, c), "linux "+tc.dev+"/") != true {
			t.Errorf("port %d: the GRUB script does not fetch the kernel from %s", tc.port, tc.dev)
		}
	}
}

// TestOptionalLoaderFile: shim's and GRUB's probes for files that need not
// be there are no warning; a missing loader or GRUB's configuration is.
func TestOptionalLoaderFile(t *testing.T) {
	for _, f := range []string{"revocations_sku.efi", "revocations_sbat.efi", "shim_certificate_0.efi",
		"grub/x86_64-efi/command.lst", "grub/x86_64-efi/fs.lst", "grub/locale/en.mo"} {
		if !optionalLoaderFile(f) {
			t.Errorf("%s is not optional", f)
		}
	}
	for _, f := range []string{contract.GRUBNetConfig, contract.GRUBNetFile, contract.UEFIPXEBootFile, contract.BIOSBootFile,
		"sub/revocations_sku.efi", "vmlinuz"} {
		if optionalLoaderFile(f) {
			t.Errorf("%s is optional", f)
		}
	}
}
