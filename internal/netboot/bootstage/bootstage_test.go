package bootstage

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	hw, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return hw
}

// fakeClock makes event times distinct and predictable without sleeping.
func fakeClock(tr *Tracker) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var n int
	tr.now = func() time.Time { n++; return base.Add(time.Duration(n) * time.Second) }
}

func TestStageOrder(t *testing.T) {
	want := []string{"dhcp-offered", "ipxe-loaded", "grub-loaded", "script-fetched", "kernel-fetched", "initrd-fetched", "root-fetched", "registered"}
	if fmt.Sprint(Stages) != fmt.Sprint(want) {
		t.Fatalf("Stages = %v, want %v", Stages, want)
	}
	for i, s := range want {
		if StageIndex(s) != i {
			t.Errorf("StageIndex(%q) = %d, want %d", s, StageIndex(s), i)
		}
	}
	if StageIndex("bogus") != -1 {
		t.Error("unknown stage should have index -1")
	}
}

func TestMarkAttributesByIP(t *testing.T) {
	tr := NewTracker()
	fakeClock(tr)
	mac := mustMAC(t, "52:54:00:AA:BB:01")
	ip := netip.MustParseAddr("10.99.0.5")

	tr.Mark(mac, ip, DHCPOffered, "")
	// TFTP/HTTP know only the IP, sometimes in IPv4-in-IPv6 form.
	tr.Mark(nil, netip.MustParseAddr("::ffff:10.99.0.5"), IPXELoaded, "undionly.kpxe")
	tr.Mark(nil, ip, KernelFetched, "vmlinuz")

	nodes := tr.Nodes()
	if len(nodes) != 1 {
		t.Fatalf("got %d nodes, want 1: %+v", len(nodes), nodes)
	}
	n := nodes[0]
	if n.MAC != "52:54:00:aa:bb:01" || n.IP != "10.99.0.5" || n.Stage != KernelFetched || n.Detail != "vmlinuz" {
		t.Errorf("node = %+v", n)
	}
	if len(n.History) != 3 || n.History[0].Stage != DHCPOffered || n.History[1].Detail != "undionly.kpxe" {
		t.Errorf("history = %+v", n.History)
	}
	if !n.Updated.Equal(n.History[2].At) {
		t.Errorf("Updated %v != last event %v", n.Updated, n.History[2].At)
	}
	if got := tr.MAC(ip); got.String() != "52:54:00:aa:bb:01" {
		t.Errorf("MAC(ip) = %v", got)
	}
}

func TestIPOnlyThenMerged(t *testing.T) {
	tr := NewTracker()
	fakeClock(tr)
	ip := netip.MustParseAddr("10.99.0.7")
	tr.Mark(nil, ip, IPXELoaded, "ipxe.efi")
	n := tr.Nodes()
	if len(n) != 1 || n[0].MAC != "" || n[0].IP != "10.99.0.7" {
		t.Fatalf("ip-only node = %+v", n)
	}
	// The script request carries the MAC: the IP-only history must join it.
	tr.Mark(mustMAC(t, "52:54:00:00:00:07"), ip, ScriptFetched, "")
	n = tr.Nodes()
	if len(n) != 1 {
		t.Fatalf("got %d nodes after merge: %+v", len(n), n)
	}
	if n[0].MAC != "52:54:00:00:00:07" || n[0].Stage != ScriptFetched || len(n[0].History) != 2 || n[0].History[0].Stage != IPXELoaded {
		t.Errorf("merged node = %+v", n[0])
	}
}

func TestMergeIntoExistingNode(t *testing.T) {
	tr := NewTracker()
	fakeClock(tr)
	mac := mustMAC(t, "52:54:00:00:00:08")
	tr.Mark(mac, netip.MustParseAddr("10.99.0.8"), DHCPOffered, "")
	tr.Mark(nil, netip.MustParseAddr("10.99.0.9"), IPXELoaded, "")
	// The node moves to .9 (say, a new lease): the .9 report belongs to it.
	tr.Mark(mac, netip.MustParseAddr("10.99.0.9"), DHCPOffered, "")
	n := tr.Nodes()
	if len(n) != 1 || n[0].IP != "10.99.0.9" || len(n[0].History) != 3 {
		t.Fatalf("nodes = %+v", n)
	}
	for i, want := range []string{DHCPOffered, IPXELoaded, DHCPOffered} {
		if n[0].History[i].Stage != want {
			t.Errorf("history[%d] = %q, want %q", i, n[0].History[i].Stage, want)
		}
	}
	// The old address no longer maps to the MAC.
	if tr.MAC(netip.MustParseAddr("10.99.0.8")) != nil {
		t.Error("stale IP still mapped")
	}
}

func TestDropsUnattributable(t *testing.T) {
	tr := NewTracker()
	tr.Mark(nil, netip.Addr{}, IPXELoaded, "")
	if len(tr.Nodes()) != 0 {
		t.Fatal("report with neither MAC nor IP was kept")
	}
	tr.Mark(mustMAC(t, "52:54:00:00:00:01"), netip.Addr{}, DHCPOffered, "")
	if n := tr.Nodes(); len(n) != 1 || n[0].IP != "" {
		t.Fatalf("MAC-only report: %+v", n)
	}
}

func TestNodesSortedByIP(t *testing.T) {
	tr := NewTracker()
	for _, last := range []int{20, 3, 100, 11} {
		tr.Mark(mustMAC(t, fmt.Sprintf("52:54:00:00:00:%02x", last)), netip.AddrFrom4([4]byte{10, 99, 0, byte(last)}), DHCPOffered, "")
	}
	tr.Mark(mustMAC(t, "52:54:00:00:00:ff"), netip.Addr{}, DHCPOffered, "")
	var got []string
	for _, n := range tr.Nodes() {
		got = append(got, n.IP)
	}
	want := "[10.99.0.3 10.99.0.11 10.99.0.20 10.99.0.100 ]"
	if fmt.Sprint(got) != want {
		t.Errorf("order = %v, want %v (numeric, not lexical; IP-less last)", got, want)
	}
}

func TestHistoryBounded(t *testing.T) {
	tr := NewTracker()
	mac := mustMAC(t, "52:54:00:00:00:01")
	for i := range MaxHistory + 10 {
		tr.Mark(mac, netip.Addr{}, DHCPOffered, fmt.Sprint(i))
	}
	h := tr.Nodes()[0].History
	if len(h) != MaxHistory || h[0].Detail != "10" || h[len(h)-1].Detail != fmt.Sprint(MaxHistory+9) {
		t.Fatalf("history len %d first %q last %q", len(h), h[0].Detail, h[len(h)-1].Detail)
	}
}

func TestSnapshotIsCopy(t *testing.T) {
	tr := NewTracker()
	mac := mustMAC(t, "52:54:00:00:00:01")
	tr.Mark(mac, netip.Addr{}, DHCPOffered, "")
	n := tr.Nodes()
	n[0].History[0].Stage = "mutated"
	if tr.Nodes()[0].History[0].Stage != DHCPOffered {
		t.Fatal("Nodes shares memory with the tracker")
	}
}

func TestJSONShape(t *testing.T) {
	tr := NewTracker()
	fakeClock(tr)
	tr.Mark(mustMAC(t, "52:54:00:00:00:01"), netip.MustParseAddr("10.99.0.1"), DHCPOffered, "")
	b, err := json.Marshal(tr.Nodes())
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"mac":"52:54:00:00:00:01","ip":"10.99.0.1","stage":"dhcp-offered","updated":"2026-01-02T03:04:06Z","history":[{"stage":"dhcp-offered","at":"2026-01-02T03:04:06Z"}]}]`
	if string(b) != want {
		t.Errorf("json:\n got %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(NewTracker().Nodes())
	if string(b) != "[]" {
		t.Errorf("empty tracker marshals to %s, want []", b)
	}
}

func TestConcurrent(t *testing.T) {
	tr := NewTracker()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				ip := netip.AddrFrom4([4]byte{10, 99, 0, byte(i%50 + 2)})
				if g%2 == 0 {
					tr.Mark(net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(i % 50)}, ip, DHCPOffered, "")
				} else {
					tr.Mark(nil, ip, KernelFetched, "")
				}
				_ = tr.Nodes()
			}
		})
	}
	wg.Wait()
	if len(tr.Nodes()) > 100 {
		t.Errorf("too many nodes: %d", len(tr.Nodes()))
	}
}
