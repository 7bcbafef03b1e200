package head

// TestHeadLeaseFileLost is issue 15's "lease file lost": the head restarts
// with an empty lease file (0 bytes, an empty lease list, or none at all)
// while the nodes keep running from RAM, with their addresses and names.
// A real head in a network namespace (as TestHeadDamagedState), its
// registry intact: no running node's address is handed to a new machine,
// not even to one that asks for it by name (option 50), each node gets
// its own address back, and every node keeps its name.
//
//	cdt-xl…  br0: the segment; it also plays a running node that holds
//	   │     its address on the wire (runMAC at runIP, answers ARP)
//	   ├─ veth ─ cdt-xh…  eth0 (the head)
//	   └─ veth ─ cdt-xc…  eth0 (RAM-root nodes, which do not answer
//	                       ARP here, and new machines, by changing MAC)

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

func TestHeadLeaseFileLost(t *testing.T) {
	if os.Getenv(roomChildEnv) == "leaselost" {
		leaseLostChild(t, strings.Fields(os.Getenv(roomEnv)))
		return
	}
	needTools(t, "udhcpc")
	ctx, cancel := context.WithTimeout(context.Background(), 10*guard)
	defer cancel()
	_, head, client := runningNodeRoom(t, ctx, "xl", "xh", "xc")
	runRoomChild(t, ctx, head, "TestHeadLeaseFileLost", "leaselost", roomEnv+"="+client.Name)
}

// leaseLostChild is TestHeadLeaseFileLost inside the head's namespace.
func leaseLostChild(t *testing.T, env []string) {
	clientNS := env[0]
	r := newRestartable(t)
	stateDir := r.stateDir
	leases := filepath.Join(stateDir, contract.LeasesFile)
	start := func(t *testing.T) (*Head, func()) { t.Helper(); return r.start(t, "start") }
	nameOf := func(ip string) string {
		return wantPrefix + strconv.Itoa(int(netip.MustParseAddr(ip).As4()[3]))
	}
	machine := &node{ns: clientNS, dir: t.TempDir()}
	setMAC := func(mac string) {
		t.Helper()
		for _, args := range [][]string{{"link", "set", "eth0", "down"}, {"link", "set", "eth0", "address", mac}, {"link", "set", "eth0", "up"}} {
			if _, err := machine.run("ip", args...); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The cluster before: a node that holds its address on the wire, and
	// two RAM-root nodes that booted through the head and registered.
	h, stop := start(t)
	tokData, err := os.ReadFile(filepath.Join(stateDir, contract.TokenFile))
	must(t, err)
	api := registry.NewClient("http://"+h.Addr().String(), strings.TrimSpace(string(tokData)), nil)
	register := func(mac, ip string) {
		t.Helper()
		resp, err := api.Register(context.Background(), registry.RegisterRequest{MAC: mac, IP: ip, Cores: 1, MemTotalKiB: 1 << 20})
		if err != nil || resp.Name != nameOf(ip) {
			t.Fatalf("%s at %s registers as %q, %v", mac, ip, resp.Name, err)
		}
	}
	register(runMAC, runIP)
	ramNodes := map[string]string{} // MAC -> address
	for _, mac := range []string{"02:cd:00:00:00:51", "02:cd:00:00:00:52"} {
		setMAC(mac)
		ip := machine.dhcp(t)["ip"]
		register(mac, ip)
		ramNodes[mac] = ip
	}
	names := map[string]string{} // MAC -> name, as registered
	before, _, err := api.Nodes(context.Background())
	must(t, err)
	for _, n := range before {
		names[n.MAC] = n.Name
	}
	stop()
	taken := []string{runIP}
	for _, ip := range ramNodes {
		taken = append(taken, ip)
	}
	t.Logf("running nodes: %s at %s; RAM-root nodes %v", runMAC, runIP, ramNodes)

	stranger := 0x60
	for _, tc := range []struct {
		name string
		lose func() error
	}{
		{"empty file", func() error { return os.WriteFile(leases, nil, 0o600) }},
		{"empty lease list", func() error { return os.WriteFile(leases, []byte(`{"version":1,"leases":[]}`+"\n"), 0o600) }},
		{"no file", func() error { return os.Remove(leases) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			must(t, tc.lose())
			h, stop := start(t)
			defer stop()
			if !strings.Contains(r.log(), "leases rebuilt from the node registry") {
				t.Errorf("the head's log does not say it rebuilt the leases:\n%s", r.log())
			}
			// New machines, the first asking for a node's address by
			// name: none gets a running node's address.
			var got []string
			for i := range taken {
				stranger++
				setMAC("02:cd:00:00:01:" + strconv.FormatInt(int64(stranger), 16))
				var vars map[string]string
				if i == 0 {
					vars = machine.dhcp(t, "-r", ramNodes["02:cd:00:00:00:51"])
				} else {
					vars = machine.dhcp(t)
				}
				if slices.Contains(taken, vars["ip"]) || slices.Contains(got, vars["ip"]) {
					t.Errorf("new machine %d got %s, which a running node (%v) or an earlier new machine (%v) holds", i, vars["ip"], taken, got)
				}
				got = append(got, vars["ip"])
			}
			t.Logf("new machines got %v", got)
			// Each RAM-root node asks for its own address and gets it,
			// under its name.
			for mac, ip := range ramNodes {
				setMAC(mac)
				vars := machine.dhcp(t, "-r", ip)
				if vars["ip"] != ip || vars["hostname"] != nameOf(ip) {
					t.Errorf("node %s got %s as %q, had %s as %s", mac, vars["ip"], vars["hostname"], ip, nameOf(ip))
				}
			}
			// The registry keeps every node's name.
			after, _, err := registry.NewClient("http://"+h.Addr().String(), "", nil).Nodes(context.Background())
			must(t, err)
			for _, n := range after {
				if want, ok := names[n.MAC]; ok && n.Name != want {
					t.Errorf("%s is called %s after the restart, was %s", n.MAC, n.Name, want)
				}
				delete(names, n.MAC)
			}
			for mac, name := range names {
				t.Errorf("%s (%s) is gone from the registry", name, mac)
			}
			for _, n := range before {
				names[n.MAC] = n.Name
			}
		})
	}
}
