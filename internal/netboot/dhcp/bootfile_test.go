package dhcp

import (
	"bytes"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// rawOption returns the value of option code in the wire bytes of a DHCP
// message (after the 240-byte header and cookie), or nil.
func rawOption(t *testing.T, b []byte, code byte) []byte {
	t.Helper()
	if len(b) < 240 {
		t.Fatalf("message of %d bytes", len(b))
	}
	for o := b[240:]; len(o) > 0; {
		switch o[0] {
		case 0:
			o = o[1:]
			continue
		case 255:
			return nil
		}
		if len(o) < 2 || len(o) < 2+int(o[1]) {
			t.Fatalf("truncated option %d", o[0])
		}
		if o[0] == code {
			return o[2 : 2+int(o[1])]
		}
		o = o[2+int(o[1]):]
	}
	return nil
}

// cString reads b as firmware written in C would: up to the first NUL, or
// to the end if there is none.
func cString(b []byte) (string, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return string(b), false
	}
	return string(b[:i]), true
}

// checkBootBytes checks that the wire bytes of reply b name file both in
// option 67 and in the BOOTP file field as NUL-terminated strings, and
// option 66 (TFTP server) likewise when tftp.
func checkBootBytes(t *testing.T, what string, b []byte, file string, tftp bool) {
	t.Helper()
	o67 := rawOption(t, b, 67)
	if name, terminated := cString(o67); name != file || !terminated || o67[len(o67)-1] != 0 {
		t.Errorf("%s: option 67 % x: reads as %q (NUL-terminated %v), want %q followed by NUL", what, o67, name, terminated, file)
	}
	field := b[108:236]
	if name, terminated := cString(field); name != file || !terminated || !bytes.Equal(field[len(file):], make([]byte, 128-len(file))) {
		t.Errorf("%s: file field reads as %q (terminated %v), want %q NUL-padded", what, name, terminated, file)
	}
	if tftp {
		o66 := rawOption(t, b, 66)
		if name, terminated := cString(o66); name != testServerIP.String() || !terminated {
			t.Errorf("%s: option 66 % x, want %q NUL-terminated", what, o66, testServerIP)
		}
	}
}

// TestBootFileCString: in every kind of reply that carries a boot file the
// name survives being read as a C string, from option 67 and from the file
// field, whatever the name: firmware that copies option 67 and reads to the
// first NUL must not run into the end option (… 6b 70 78 65 ff).
func TestBootFileCString(t *testing.T) {
	mac := mustMAC("52:54:00:00:0c:01")
	bios := pxeMods("PXEClient:Arch:00000:UNDI:002001", iana.INTEL_X86PC)
	uefi := pxeMods("PXEClient:Arch:00007:UNDI:003016", iana.EFI_X86_64)
	for _, files := range []BootFiles{{}, {BIOS: "boot/x86/ipxe-custom.kpxe", UEFI: "EFI/BOOT/BOOTX64.EFI", UEFIHTTP: "x/ipxe.efi"}, {BIOS: "a", UEFI: "b.efi"}} {
		cfg := testConfig(t, ModeServer)
		cfg.BootFiles = files
		srv := newTestServer(t, cfg)
		cfg.Mode = ModeProxy
		proxy := newTestServer(t, cfg)
		biosFile, uefiFile, httpFile := srv.cfg.BootFiles.BIOS, srv.cfg.BootFiles.UEFI, srv.cfg.BootFiles.UEFIHTTP
		wire := func(s *Server, m *dhcpv4.DHCPv4, port int, peer *net.UDPAddr) []byte {
			t.Helper()
			r, _ := s.handlePacket(m.ToBytes(), port, peer)
			if r == nil {
				t.Fatalf("no reply to %s", m.MessageType())
			}
			return r.ToBytes()
		}
		for _, c := range []struct {
			name string
			mods []dhcpv4.Modifier
			file string
			tftp bool
		}{
			{"bios", bios, biosFile, true},
			{"uefi", uefi, uefiFile, true},
			{"uefi http", pxeMods("HTTPClient:Arch:00016:UNDI:003001", iana.EFI_X86_64_HTTP), "http://10.99.0.1/ipxe/" + httpFile, false},
			{"ipxe", append(bios, dhcpv4.WithUserClass("iPXE", false)), "http://10.99.0.1/boot/52:54:00:00:0c:01.ipxe", false},
		} {
			offerBytes := wire(srv, discover(mac, c.mods...), 67, peer67)
			checkBootBytes(t, c.name+" server OFFER", offerBytes, c.file, c.tftp)
			offer, _ := dhcpv4.FromBytes(offerBytes)
			checkBootBytes(t, c.name+" server ACK", wire(srv, request(offer, c.mods...), 67, peer67), c.file, c.tftp)
			inf, _ := dhcpv4.NewInform(mac, offer.YourIPAddr, c.mods...)
			checkBootBytes(t, c.name+" INFORM ACK", wire(srv, inf, 67, &net.UDPAddr{IP: offer.YourIPAddr, Port: 68}), c.file, c.tftp)

			checkBootBytes(t, c.name+" proxy OFFER", wire(proxy, discover(mac, c.mods...), 67, peer67), c.file, c.tftp)
			req67, _ := dhcpv4.New(append(c.mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP.AsSlice())))...)
			checkBootBytes(t, c.name+" proxy ACK on 67", wire(proxy, req67, 67, peer67), c.file, c.tftp)
			req4011, _ := dhcpv4.New(append(c.mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac),
				dhcpv4.WithClientIP(net.ParseIP("10.99.0.120")))...)
			checkBootBytes(t, c.name+" ACK on 4011", wire(proxy, req4011, pxePort, &net.UDPAddr{IP: net.ParseIP("10.99.0.120"), Port: 68}), c.file, c.tftp)
		}
	}

	// A name that does not fit the 128-byte file field is not cut there
	// (a cut name is a wrong name); option 67 carries it whole.
	cfg := testConfig(t, ModeServer)
	long := "ipxe/" + string(bytes.Repeat([]byte("x"), 130)) + ".kpxe"
	cfg.BootFiles.BIOS = long
	b := func() []byte {
		r, _ := newTestServer(t, cfg).handlePacket(discover(mac, bios...).ToBytes(), 67, peer67)
		return r.ToBytes()
	}()
	if name, ok := cString(rawOption(t, b, 67)); name != long || !ok {
		t.Errorf("long name in option 67: %q", name)
	}
	if !bytes.Equal(b[108:236], make([]byte, 128)) {
		t.Errorf("long name cut into the file field: %q", b[108:236])
	}
}
