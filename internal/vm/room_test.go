package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/clusterdebian/clusterdebian/internal/hosttools"
	"github.com/clusterdebian/clusterdebian/internal/netns"
)

func TestCheckLAN(t *testing.T) {
	for lan, want := range map[string]string{
		DefaultLAN:         "",
		"10.20.0.0/22":     "",
		"172.16.0.0/12":    "",
		"192.168.7.0/24":   "",
		"192.168.50.0/25":  "give a /24 or wider",
		"192.168.50.1/23":  "host bits set",
		"198.51.100.0/24":  "the outside's address 198.51.100.80",
		"lab":              "not a subnet like " + DefaultLAN,
		"fd00::/64":        "not IPv4",
		"192.168.50.0/350": "not a subnet",
	} {
		_, err := checkLAN(lan)
		switch {
		case want == "" && err != nil:
			t.Errorf("checkLAN(%s): %v", lan, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("checkLAN(%s) = %v, want an error saying %q", lan, err, want)
		}
	}
}

// The DHCP range runs from .100 to 55 below the broadcast address, and the
// router is the first address, whatever the width.
func TestRoomAddresses(t *testing.T) {
	for _, tt := range []struct{ subnet, router, first, last, mask string }{
		{"192.168.50.0/23", "192.168.50.1", "192.168.50.100", "192.168.51.200", "255.255.254.0"},
		{"192.168.7.0/24", "192.168.7.1", "192.168.7.100", "192.168.7.200", "255.255.255.0"},
		{"10.20.0.0/22", "10.20.0.1", "10.20.0.100", "10.20.3.200", "255.255.252.0"},
		{"172.16.0.0/12", "172.16.0.1", "172.16.0.100", "172.31.255.200", "255.240.0.0"},
	} {
		r := newRoom("x", "/d", RoomLAN, netip.MustParsePrefix(tt.subnet))
		first, last, mask := r.dhcpRange()
		if r.Router != tt.router || first.String() != tt.first || last.String() != tt.last || mask.String() != tt.mask {
			t.Errorf("%s: router %s, range %s-%s/%s; want %s, %s-%s/%s", tt.subnet, r.Router, first, last, mask, tt.router, tt.first, tt.last, tt.mask)
		}
	}
	lan, up := newRoom("lab", "/d/lab", RoomLAN, netip.MustParsePrefix(DefaultLAN)), newRoom("lab", "/d/lab", RoomUplink, netip.MustParsePrefix(UplinkSubnet))
	if lan.NetNS != "cdvm-lab.lan" || lan.Bridge != Bridge || lan.Lease != LANLease || lan.Dir != "/d/lab/lan" {
		t.Errorf("LAN room %+v", lan)
	}
	if up.NetNS != "cdvm-lab.uplink" || up.Bridge != UplinkBridge || up.Router != "172.30.0.1" || up.Dir != "/d/lab/uplink" {
		t.Errorf("uplink room %+v", up)
	}
	// No cluster name makes another cluster's room namespace.
	if CheckName("lab.lan") == nil {
		t.Error("a cluster name with a dot is accepted: its namespace could be another cluster's LAN")
	}
}

func TestRoomLeases(t *testing.T) {
	r := &RoomState{Dir: t.TempDir()}
	writeFile(t, filepath.Join(r.Dir, RoomLeases), "1767225600 52:54:00:CD:11:01 192.168.51.20 node1 01:52:54:00:cd:11:01\n1767225660 52:54:00:cd:11:02 192.168.50.130 * *\n")
	ls, err := r.Leases()
	if err != nil || len(ls) != 2 {
		t.Fatalf("Leases = %+v, %v", ls, err)
	}
	if ls[0].MAC != "52:54:00:cd:11:01" || ls[0].IP.String() != "192.168.51.20" || ls[0].Hostname != "node1" || ls[0].Expires.Unix() != 1767225600 {
		t.Errorf("first lease %+v", ls[0])
	}
	if ls[1].Hostname != "" || ls[1].MAC != "52:54:00:cd:11:02" {
		t.Errorf("second lease %+v", ls[1])
	}
	writeFile(t, filepath.Join(r.Dir, RoomLeases), "soon 52:54:00:cd:11:01 192.168.51.20 node1 *\n")
	if _, err := r.Leases(); err == nil {
		t.Error("a damaged lease line was read")
	}
}

// TestRoomsInNetns sets up two clusters' networks as vm up does, without
// VMs: one on a LAN (a /22, to show any width works) and one with an
// uplink. A namespace on each room's bridge stands for a VM's NIC: it gets
// a lease with the room's router and DNS server, resolves OutsideName and
// fetches WhoamiPath beyond the router, which names its address. Down then
// leaves no namespace and no process.
func TestRoomsInNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("namespace test skipped in -short mode")
	}
	if err := netns.Check(); err != nil {
		t.Skipf("needs network namespaces: %v", err)
	}
	if err := hosttools.Require(roomTools()); err != nil {
		t.Skipf("needs the rooms' servers: %v (clusterdebian doctor --fix installs them)", err)
	}
	useStateRoot(t)
	iso := filepath.Join(t.TempDir(), "c.iso")
	writeFile(t, iso, "iso")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	for _, tt := range []struct {
		room   string
		opts   UpOptions
		subnet string
		bridge string
		lease  time.Duration
	}{
		{RoomLAN, UpOptions{LAN: "10.20.0.0/22"}, "10.20.0.0/22", Bridge, LANLease},
		{RoomUplink, UpOptions{Uplink: true}, UplinkSubnet, UplinkBridge, UplinkLease},
	} {
		t.Run(tt.room, func(t *testing.T) {
			o := tt.opts
			o.Name, o.ISO, o.Nodes, o.Attached = netns.UniqueName("cdt"), iso, 1, true
			if err := o.validate(); err != nil {
				t.Fatal(err)
			}
			var progress strings.Builder
			var sawNetwork bool
			o.OnNetwork = func(c *Cluster) error {
				sawNetwork = netns.Exists(c.NetNS) && len(c.rooms()) == 1
				return nil
			}
			c, err := setUp(ctx, o, &progress)
			if err != nil {
				t.Fatal(err)
			}
			downed := false
			t.Cleanup(func() {
				if !downed {
					c.Down()
				}
			})
			r := c.LAN
			if tt.room == RoomUplink {
				r = c.Uplink
			}
			if r == nil || !sawNetwork || !strings.Contains(progress.String(), r.Describe()) {
				t.Fatalf("room %+v; OnNetwork saw the network: %v; progress:\n%s", r, sawNetwork, progress.String())
			}
			// The state another process reads names the room and node1's
			// second NIC.
			st, err := ReadState(c.Dir)
			if err != nil {
				t.Fatal(err)
			}
			if tt.room == RoomUplink && (st.Uplink == nil || st.VMs[0].UplinkTap != UplinkTap || st.VMs[0].UplinkMAC != MAC(o.Name, uplinkNIC) || len(c.spec(st.VMs[0], "tcg").NICs) != 2) {
				t.Errorf("uplink state %+v, node1 %+v", st.Uplink, st.VMs[0])
			}
			if tt.room == RoomLAN && (st.LAN == nil || st.LAN.PIDs == nil || st.Uplink != nil || st.VMs[0].UplinkTap != "") {
				t.Errorf("LAN state %+v, node1 %+v", st.LAN, st.VMs[0])
			}

			// A VM's NIC: a namespace on the room's bridge.
			cluster := &netns.NS{Name: c.NetNS}
			nic, err := netns.New(ctx, netns.UniqueName(netns.TestPrefix))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nic.Delete(context.Background()) })
			const mac = "52:54:00:cd:99:07"
			if err := netns.AddVeth(ctx, cluster, "tnic", nic, "eth0"); err != nil {
				t.Fatal(err)
			}
			if err := cluster.SetMaster(ctx, "tnic", tt.bridge); err != nil {
				t.Fatal(err)
			}
			if err := nic.IP(ctx, "link", "set", "eth0", "address", mac); err != nil {
				t.Fatal(err)
			}
			lease := dhcpLease(t, ctx, nic, mac)
			ack := lease.ACK
			ip, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
			subnet := netip.MustParsePrefix(tt.subnet)
			first, last, _ := r.dhcpRange()
			ones, _ := ack.SubnetMask().Size()
			if !subnet.Contains(ip) || ip.Less(first) || last.Less(ip) || ones != subnet.Bits() {
				t.Errorf("leased %v/%d, want an address in %s-%s/%d", ip, ones, first, last, subnet.Bits())
			}
			if rs := ack.Router(); len(rs) != 1 || rs[0].String() != r.Router {
				t.Errorf("router %v, want %s", rs, r.Router)
			}
			if ds := ack.DNS(); len(ds) != 1 || ds[0].String() != r.Router {
				t.Errorf("DNS %v, want %s", ds, r.Router)
			}
			if lt := ack.IPAddressLeaseTime(0); lt != tt.lease {
				t.Errorf("lease time %v, want %v", lt, tt.lease)
			}
			ls, err := r.Leases()
			if err != nil || len(ls) != 1 || ls[0].MAC != mac || ls[0].IP != ip {
				t.Errorf("the room's leases: %+v, %v; want %s at %s", ls, err, mac, ip)
			}

			// Configured as the lease says, the NIC reaches the outside
			// by name, beyond the router.
			if err := nic.AddAddr(ctx, "eth0", netip.PrefixFrom(ip, ones)); err != nil {
				t.Fatal(err)
			}
			if err := nic.IP(ctx, "route", "add", "default", "via", r.Router); err != nil {
				t.Fatal(err)
			}
			// The resolver's queries run on goroutines of their own: each
			// dials from inside the namespace.
			res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (conn net.Conn, err error) {
				err = nic.Do(func() error {
					var d net.Dialer
					conn, err = d.DialContext(ctx, network, net.JoinHostPort(r.Router, "53"))
					return err
				})
				return conn, err
			}}
			addrs, err := res.LookupHost(ctx, OutsideName)
			if err != nil {
				t.Fatal(err)
			}
			var body string
			err = nic.Do(func() error {
				var err error
				body, err = httpGet(ctx, OutsideName, addrs[0], WhoamiPath)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(addrs) != 1 || addrs[0] != OutsideAddr {
				t.Errorf("%s resolves to %v, want %s", OutsideName, addrs, OutsideAddr)
			}
			if want := "you are " + ip.String() + "\n"; body != want {
				t.Errorf("%s%s says %q, want %q", OutsideName, WhoamiPath, body, want)
			}
			for file, want := range map[string]string{RoomDHCPLog: "DHCPACK(" + r.Iface + ") " + ip.String() + " " + mac, RoomHTTPLog: "url:" + WhoamiPath} {
				if data, _ := os.ReadFile(filepath.Join(r.Dir, file)); !strings.Contains(string(data), want) {
					t.Errorf("%s lacks %q:\n%s", file, want, data)
				}
			}

			pids := r.PIDs
			downed = true
			if tt.room == RoomUplink {
				// A state file this version cannot read (another
				// checkout's, with a field it does not know): Down by
				// the name alone still finds the room.
				writeFile(t, filepath.Join(c.Dir, StateFile), `{"name":"`+o.Name+`","vms":[{"name":"node1","uplink_nic":"x"}]}`)
				if _, err := LoadCluster(o.Name); err == nil || errors.Is(err, ErrNoCluster) {
					t.Fatalf("LoadCluster of a foreign state: %v, want an error other than ErrNoCluster", err)
				}
				if err := Down(o.Name); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
					t.Errorf("the cluster's folder survived Down: %v", err)
				}
			} else if err := c.Down(); err != nil {
				t.Fatal(err)
			}
			for _, ns := range []string{c.NetNS, r.NetNS} {
				if netns.Exists(ns) {
					t.Errorf("namespace %s survived Down", ns)
				}
			}
			for _, pid := range pids {
				if procAlive(pid) {
					t.Errorf("pid %d survived Down", pid)
				}
			}
		})
	}
}

// dhcpLease asks for a lease from inside ns, on eth0.
func dhcpLease(t *testing.T, ctx context.Context, ns *netns.NS, mac string) *nclient4.Lease {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	var lease *nclient4.Lease
	err := ns.Do(func() error {
		c, err := nclient4.New("eth0", nclient4.WithHWAddr(hw), nclient4.WithTimeout(5*time.Second), nclient4.WithRetry(5))
		if err != nil {
			return err
		}
		defer c.Close()
		lease, err = c.Request(ctx, dhcpv4.WithOption(dhcpv4.OptParameterRequestList(dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer, dhcpv4.OptionSubnetMask)))
		return err
	})
	if err != nil {
		t.Fatalf("DHCP in %s: %v", ns.Name, err)
	}
	return lease
}

// httpGet fetches path from addr:80 (host header host) on a connection made
// on the calling thread, as netns.Do needs, and returns the body.
func httpGet(ctx context.Context, host, addr, path string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(addr, "80"))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host)
	br := bufio.NewReader(conn)
	status, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.Contains(status, " 200 ") {
		return "", fmt.Errorf("GET %s: %s", path, strings.TrimSpace(status))
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if line == "\r\n" || line == "\n" {
			break
		}
	}
	body, err := io.ReadAll(br)
	return string(body), err
}
