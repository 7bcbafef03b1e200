package uplink

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "on": ModeOn, "off": ModeOff} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"yes", "true", "Auto"} {
		if _, err := ParseMode(bad); err == nil || !strings.Contains(err.Error(), `"auto"`) {
			t.Errorf("ParseMode(%q): %v, want an error listing the modes", bad, err)
		}
	}
}

func TestDecide(t *testing.T) {
	subnet := netip.MustParsePrefix("10.99.0.0/24")
	gw := netip.MustParseAddr("192.168.1.1")
	uplink := Route{Interface: "wlan0", Gateway: gw, Metric: 600}
	wired := Route{Interface: "enp2s0", Gateway: netip.MustParseAddr("172.16.0.1"), Metric: 100}
	onCluster := Route{Interface: "eth0", Gateway: netip.MustParseAddr("10.99.0.254")}
	for _, tc := range []struct {
		name string
		s    Situation
		out  string
		why  string // in Plan.Why, or in the error
		err  bool
	}{
		{"auto with an uplink", Situation{Mode: ModeAuto, ServesAddresses: true, Routes: []Route{uplink}}, "wlan0", "via 192.168.1.1 is on wlan0", false},
		{"auto picks the best route", Situation{Mode: ModeAuto, ServesAddresses: true, Routes: []Route{uplink, wired}}, "enp2s0", "enp2s0", false},
		{"auto, the default route on the cluster interface", Situation{Mode: ModeAuto, ServesAddresses: true, Routes: []Route{onCluster}}, "", "no uplink", false},
		{"auto, a route on the cluster interface and an uplink", Situation{Mode: ModeAuto, ServesAddresses: true, Routes: []Route{onCluster, uplink}}, "wlan0", "wlan0", false},
		{"auto without routes", Situation{Mode: ModeAuto, ServesAddresses: true}, "", "no uplink", false},
		{"auto on a LAN", Situation{Mode: ModeAuto, Routes: []Route{uplink}}, "", "LAN's DHCP server", false},
		{"auto with a configured gateway", Situation{Mode: ModeAuto, ServesAddresses: true, Gateway: netip.MustParseAddr("10.99.0.254"), Routes: []Route{uplink}}, "", "network.gateway", false},
		{"off", Situation{Mode: ModeOff, ServesAddresses: true, Routes: []Route{uplink}}, "", "off", false},
		{"on with an uplink", Situation{Mode: ModeOn, ServesAddresses: true, Routes: []Route{uplink}}, "wlan0", "wlan0", false},
		{"on without routes", Situation{Mode: ModeOn, ServesAddresses: true}, "", "no default route on an interface other than the cluster interface eth0", true},
		{"on, the route on the cluster interface", Situation{Mode: ModeOn, ServesAddresses: true, Routes: []Route{onCluster}}, "", "only default route is on the cluster interface eth0", true},
		{"on, on a LAN", Situation{Mode: ModeOn, Routes: []Route{uplink}}, "", "nothing to do", false},
		{"on with a configured gateway", Situation{Mode: ModeOn, ServesAddresses: true, Gateway: gw, Routes: []Route{uplink}}, "", "network.gateway", true},
	} {
		tc.s.Cluster, tc.s.Subnet = "eth0", subnet
		p, err := Decide(tc.s)
		switch {
		case tc.err && (!errors.Is(err, ErrNoUplink) || !strings.Contains(err.Error(), tc.why)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.why)
		case !tc.err && (err != nil || p.Out != tc.out || !strings.Contains(p.Why, tc.why)):
			t.Errorf("%s: plan %+v, %v; want out %q saying %q", tc.name, p, err, tc.out, tc.why)
		case !tc.err && p.On() && (p.Subnet != subnet || p.Cluster != "eth0"):
			t.Errorf("%s: plan %+v lacks the cluster side", tc.name, p)
		}
	}
}

func TestRuleset(t *testing.T) {
	p := Plan{Out: "wlan0", Cluster: "eth0", Subnet: netip.MustParsePrefix("10.99.0.0/24")}
	got := Ruleset(p)
	for _, want := range []string{
		"add table ip clusterdebian\ndelete table ip clusterdebian\ntable ip clusterdebian {",
		`iifname "eth0" oifname "wlan0" ip saddr 10.99.0.0/24 accept` + "\n\t\t" + `iifname "eth0" oifname "wlan0" drop`,
		`iifname "wlan0" oifname "eth0" ct state established,related accept` + "\n\t\t" + `iifname "wlan0" oifname "eth0" drop`,
		"type nat hook postrouting priority srcnat; policy accept;\n\t\t" + `oifname "wlan0" ip saddr 10.99.0.0/24 masquerade`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
	if off := Ruleset(Plan{}); off != "add table ip clusterdebian\ndelete table ip clusterdebian\n" {
		t.Errorf("ruleset without NAT:\n%s", off)
	}
	if q := quote(`we"ird\`); q != `"we\"ird\\"` {
		t.Errorf("quote = %s", q)
	}
}

func TestResolvers(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name             string
		resolv, resolved string
		noResolved       bool
		want             []netip.Addr
	}{
		{"plain", "# from DHCP\nsearch lan\nnameserver 192.168.1.1\nnameserver 9.9.9.9\n", "", true, []netip.Addr{a("192.168.1.1"), a("9.9.9.9")}},
		{"systemd-resolved's stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
			"# This is /run/systemd/resolve/resolv.conf\nnameserver 192.168.1.1\nnameserver fd00::1\nnameserver 192.168.1.1\n", false, []netip.Addr{a("192.168.1.1")}},
		{"a stub without resolved's list", "nameserver 127.0.0.1\n", "", true, nil},
		{"IPv6 and junk only", "nameserver ::1\nnameserver fe80::1%eth0\nnameserver bogus\nnameserver\n", "", true, nil},
		{"duplicates", "nameserver 1.1.1.1\nnameserver 1.1.1.1\nnameserver 0.0.0.0\n", "", true, []netip.Addr{a("1.1.1.1")}},
	} {
		var resolved []byte
		if !tc.noResolved {
			resolved = []byte(tc.resolved)
		}
		if got := Resolvers([]byte(tc.resolv), resolved); !slices.Equal(got, tc.want) {
			t.Errorf("%s: Resolvers = %v, want %v", tc.name, got, tc.want)
		}
	}
}
