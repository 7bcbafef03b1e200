package head

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/uplink"
)

// TestParseIPAddrJSON: ip -j tells a lease's address (with a lifetime)
// from one put there for good.
func TestParseIPAddrJSON(t *testing.T) {
	out := `[{"ifindex":2,"ifname":"eth0","addr_info":[` +
		`{"family":"inet","local":"192.168.50.7","prefixlen":23,"scope":"global","dynamic":true,"valid_life_time":120},` +
		`{"family":"inet","local":"10.99.0.1","prefixlen":24,"scope":"global","valid_life_time":4294967295},` +
		`{"family":"inet6","local":"fe80::1","prefixlen":64}]}]`
	got, err := parseIPAddrJSON([]byte(out))
	want := []IfAddr{{Prefix: netip.MustParsePrefix("192.168.50.7/23"), Dynamic: true}, {Prefix: netip.MustParsePrefix("10.99.0.1/24")}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("parseIPAddrJSON = %v, %v; want %v", got, err, want)
	}
	if _, err := parseIPAddrJSON([]byte("Device does not exist")); err == nil {
		t.Error("no error for output that is not JSON")
	}
}

// TestParseProcRoute: the default routes of /proc/net/route, with their
// gateway (little-endian hex) and metric; routes that are down and other
// destinations are not.
func TestParseProcRoute(t *testing.T) {
	table := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
		"eth0\t0063000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
		"ppp0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0\n" +
		"eth1\t00000000\t0100000A\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"
	want := []uplink.Route{
		{Interface: "wlan0", Gateway: netip.MustParseAddr("192.168.1.1"), Metric: 600},
		{Interface: "ppp0", Metric: 50},
	}
	if got := parseProcRoute([]byte(table)); !slices.Equal(got, want) {
		t.Errorf("parseProcRoute = %v, want %v", got, want)
	}
}

// TestWriteResolvers: a plain resolv.conf is replaced; a link (systemd-
// resolved, resolvconf) is someone else's and left alone.
func TestWriteResolvers(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	servers := []netip.Addr{netip.MustParseAddr("192.168.50.1"), netip.MustParseAddr("9.9.9.9")}
	must(t, writeResolvers(root, servers, "lab.example", "from the lease"))
	data, _ := os.ReadFile(filepath.Join(root, "etc/resolv.conf"))
	if string(data) != "# from the lease\nsearch lab.example\nnameserver 192.168.50.1\nnameserver 9.9.9.9\n" {
		t.Errorf("resolv.conf:\n%s", data)
	}
	if got, err := resolversIn(root); err != nil || !slices.Equal(got, servers) {
		t.Errorf("resolversIn = %v, %v", got, err)
	}
	link := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(link, "etc"), 0o755))
	must(t, os.Symlink("../run/systemd/resolve/stub-resolv.conf", filepath.Join(link, "etc/resolv.conf")))
	if err := writeResolvers(link, servers, "", "x"); err == nil || !strings.Contains(err.Error(), "another program") {
		t.Errorf("writing over a link: %v", err)
	}
}
