package dhcp

import (
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// FuzzHandlePacket feeds arbitrary bytes through the packet path of a server,
// a proxy and auto mode (ports 67 and 4011) and checks that nothing panics,
// every reply serialises and parses again, and no proxy hands out an
// address. Run it with
//
//	go test -run '^$' -fuzz FuzzHandlePacket ./internal/netboot/dhcp/
func FuzzHandlePacket(f *testing.F) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	seed := func(mods ...dhcpv4.Modifier) {
		d, err := dhcpv4.NewDiscovery(mac, mods...)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(d.ToBytes())
	}
	seed()
	seed(dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, make([]byte, 17))))
	seed(dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64_HTTP)), dhcpv4.WithUserClass("iPXE", false))
	seed(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 9))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, 0, 0, 0, 0, 255})))
	f.Add([]byte{})
	f.Add([]byte{1, 1, 6, 0})

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var servers []*Server
	for _, mode := range []Mode{ModeServer, ModeProxy, ModeAuto} {
		cfg := testConfig(f, mode)
		cfg.Logger = quiet
		cfg.OfferDelay = -1
		s, err := New(cfg)
		if err != nil {
			f.Fatal(err)
		}
		if mode == ModeAuto {
			// Auto mode acting as server until an input names another
			// server; then a proxy for good.
			s.setMode(ModeServer)
		}
		servers = append(servers, s)
	}
	peer := &net.UDPAddr{IP: net.IPv4(10, 99, 0, 9), Port: 68}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, s := range servers {
			for _, port := range []int{67, pxePort} {
				r, dest := s.handlePacket(data, port, peer)
				if r == nil {
					continue
				}
				if dest == nil {
					t.Fatalf("reply without destination")
				}
				if _, err := dhcpv4.FromBytes(r.ToBytes()); err != nil {
					t.Fatalf("reply does not parse: %v", err)
				}
				if s.Mode() == ModeProxy && !isZero(r.YourIPAddr) {
					t.Fatalf("proxy reply hands out %v", r.YourIPAddr)
				}
			}
		}
	})
}
