package head

import (
	"net/netip"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
)

// TestListenersMatchAudit ties the head's port table (Listeners, which
// doctor checks node1 against) to the access rules of TestHeadAccessAudit
// (headPorts), which checks a real head's sockets: the three must agree.
func TestListenersMatchAudit(t *testing.T) {
	got := map[string]bool{}
	for _, mode := range []dhcp.Mode{dhcp.ModeServer, dhcp.ModeProxy, dhcp.ModeOff} {
		for _, l := range Listeners(mode, netip.MustParseAddr(nsHead), 80) {
			got[l.String()] = true
			if _, ok := headPorts[l.String()]; !ok {
				t.Errorf("Listeners(%s) has %s (%s), which headPorts has no access rule for", mode, l, l.What)
			}
		}
	}
	for s := range headPorts {
		if !got[s] {
			t.Errorf("headPorts has %s, which Listeners lacks in every mode", s)
		}
	}
	proxy := Listeners(dhcp.ModeProxy, netip.MustParseAddr(nsHead), 8080)
	want := []string{"udp 0.0.0.0:67", "udp 0.0.0.0:4011", "udp 10.99.0.1:69", "tcp 10.99.0.1:8080", "tcp 127.0.0.1:8080"}
	if len(proxy) != len(want) {
		t.Fatalf("proxy mode: %v, want %v", proxy, want)
	}
	for i, l := range proxy {
		if l.String() != want[i] {
			t.Errorf("proxy mode socket %d: %s, want %s", i, l, want[i])
		}
	}
	if off := Listeners(dhcp.ModeOff, netip.MustParseAddr(nsHead), 80); len(off) != 3 {
		t.Errorf("DHCP off: %v, want TFTP and HTTP only", off)
	}
}
