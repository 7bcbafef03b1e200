package dhcp

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

const (
	// pxePort is where PXE clients send their boot-server REQUEST after a
	// ProxyDHCP offer.
	pxePort = 4011

	archNone     = -1 // option 93 absent or malformed
	archBIOS     = 0
	archEFIx64   = 7
	archEFIBC    = 9 // EFI byte code; in practice x86-64 UEFI firmware
	archEFIx64HT = 16

	vendorPXE  = "PXEClient"
	vendorHTTP = "HTTPClient"
	userIPXE   = "iPXE"

	// PXE vendor sub-options carried in option 43 (PXE spec 2.1, table 2-1).
	pxeDiscoveryControl = 6
	pxeBootItem         = 71
	// discoveryUseBootFile (bit 3): the offer carries a boot file name;
	// download it instead of running boot server discovery or a menu.
	discoveryUseBootFile = 8
)

// clientInfo is what a request says about the machine's firmware.
type clientInfo struct {
	vendor    string   // option 60
	userClass []string // option 77
	arch      int      // first entry of option 93, or archNone
	guid      []byte   // option 97
	pxe       bool     // vendor class PXEClient* or HTTPClient*, or iPXE
	ipxe      bool     // user class iPXE
	http      bool     // UEFI HTTP boot
}

func classify(m *dhcpv4.DHCPv4) clientInfo {
	ci := clientInfo{arch: archNone}
	ci.vendor = string(m.Options.Get(dhcpv4.OptionClassIdentifier))
	if v := m.Options.Get(dhcpv4.OptionClientSystemArchitectureType); len(v) >= 2 {
		ci.arch = int(binary.BigEndian.Uint16(v))
	}
	ci.guid = m.Options.Get(dhcpv4.OptionClientMachineIdentifier)
	// iPXE sends option 77 as the bare string "iPXE"; RFC 3004 clients send
	// length-prefixed strings. Accept both.
	if raw := m.Options.Get(dhcpv4.OptionUserClassInformation); raw != nil {
		ci.userClass = m.UserClass()
		if string(raw) == userIPXE {
			ci.ipxe = true
		}
		for _, uc := range ci.userClass {
			ci.ipxe = ci.ipxe || uc == userIPXE
		}
	}
	ci.http = strings.HasPrefix(ci.vendor, vendorHTTP) || ci.arch == archEFIx64HT
	ci.pxe = strings.HasPrefix(ci.vendor, vendorPXE) || strings.HasPrefix(ci.vendor, vendorHTTP) || ci.ipxe
	return ci
}

// archString names ci.arch for logs.
func (ci clientInfo) archString() string {
	switch ci.arch {
	case archNone:
		return "none"
	case archBIOS:
		return "0(bios)"
	case archEFIx64:
		return "7(efi-x64)"
	case archEFIBC:
		return "9(efi-bc)"
	case archEFIx64HT:
		return "16(efi-x64-http)"
	}
	return fmt.Sprint(ci.arch)
}

// bootChoice is what a PXE client is told to load.
type bootChoice struct {
	file string // TFTP file name or URL
	kind string // for logs and events: bios-tftp, uefi-tftp, uefi-http, ipxe-script
	// vendorClass is the option 60 a reply must carry for this client kind:
	// UEFI HTTP boot ignores offers without "HTTPClient", PXE ROMs only
	// treat a ProxyDHCP offer as one if it says "PXEClient".
	vendorClass string
	tftp        bool
}

// chooseBoot picks the boot file for a PXE client. ok is false, with a
// reason for the log, if the client is not PXE or its firmware is one we
// ship nothing for.
func (s *Server) chooseBoot(mac net.HardwareAddr, ci clientInfo) (bc bootChoice, ok bool, reason string) {
	if !ci.pxe {
		return bc, false, "not a PXE client"
	}
	bf := s.cfg.BootFiles
	switch {
	case ci.ipxe:
		// iPXE is already running: hand it its per-machine script, never
		// the iPXE binary again (that would loop).
		vc := vendorPXE
		if ci.http {
			vc = vendorHTTP
		}
		return bootChoice{file: s.cfg.HTTPBase + contract.ScriptPath(mac), kind: "ipxe-script", vendorClass: vc}, true, ""
	case ci.http:
		if ci.arch != archEFIx64HT && ci.arch != archNone {
			return bc, false, "HTTP boot for unsupported architecture " + ci.archString()
		}
		return bootChoice{file: s.cfg.HTTPBase + "/ipxe/" + bf.UEFIHTTP, kind: "uefi-http", vendorClass: vendorHTTP}, true, ""
	case ci.arch == archBIOS || ci.arch == archNone:
		// Some old BIOS ROMs omit option 93; they are all x86 BIOS.
		return bootChoice{file: bf.BIOS, kind: "bios-tftp", vendorClass: vendorPXE, tftp: true}, true, ""
	case ci.arch == archEFIx64 || ci.arch == archEFIBC:
		return bootChoice{file: bf.UEFI, kind: "uefi-tftp", vendorClass: vendorPXE, tftp: true}, true, ""
	}
	return bc, false, "unsupported client architecture " + ci.archString()
}

// pxeVendorOptions builds option 43 for a ProxyDHCP reply: discovery control
// "use the boot file in this offer", plus the boot item the client asked for
// on port 4011, echoed as the PXE spec requires.
func pxeVendorOptions(req *dhcpv4.DHCPv4) []byte {
	out := []byte{pxeDiscoveryControl, 1, discoveryUseBootFile}
	if item := findSubOption(req.Options.Get(dhcpv4.OptionVendorSpecificInformation), pxeBootItem); len(item) == 4 {
		out = append(out, pxeBootItem, 4)
		out = append(out, item...)
	}
	return append(out, 255)
}

// findSubOption returns the value of sub-option code in an encapsulated
// option block, or nil. Malformed blocks yield nil.
func findSubOption(b []byte, code byte) []byte {
	for len(b) > 0 {
		c := b[0]
		switch c {
		case 0:
			b = b[1:]
			continue
		case 255:
			return nil
		}
		if len(b) < 2 || len(b) < 2+int(b[1]) {
			return nil
		}
		n := int(b[1])
		if c == code {
			return b[2 : 2+n]
		}
		b = b[2+n:]
	}
	return nil
}
