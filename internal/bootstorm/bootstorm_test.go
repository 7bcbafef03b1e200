package bootstorm

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/head"
)

// Scaling divides sizes and rates alike, so that the physical limit, and
// with it every time the storm measures, is the real one.
func TestScaleKeepsTimes(t *testing.T) {
	full := Scale{Factor: 1}
	if got := full.ImageBytes(); got != 460_000_000 {
		t.Errorf("real image: %d bytes, want issue 13's 460 MB", got)
	}
	for _, f := range []int{1, 10, 100, 1000} {
		s := Scale{Factor: f}
		if err := s.Check(); err != nil {
			t.Fatalf("factor %d: %v", f, err)
		}
		if s.LinkBits()*int64(f) != RealLinkBits {
			t.Errorf("factor %d: link %d bit/s", f, s.LinkBits())
		}
		full100 := PhysicalLimit(100, full.ImageBytes(), full.LinkBits())
		got := PhysicalLimit(100, s.ImageBytes(), s.LinkBits())
		// Integer division of the sizes loses under a byte per file.
		if d := full100 - got; d < 0 || d > time.Millisecond {
			t.Errorf("factor %d: limit for 100 nodes %v, real %v", f, got, full100)
		}
		if s.Files()[contract.BIOSBootFile] < 1 {
			t.Errorf("factor %d: empty iPXE binary", f)
		}
	}
	// 100 × 460 MB at 1 Gbit/s: 368 s (issue 13's "about 6.5 minutes"
	// counts 117 MB/s of payload).
	if got := PhysicalLimit(100, full.ImageBytes(), full.LinkBits()); got != 368*time.Second {
		t.Errorf("physical limit %v, want 368s", got)
	}
	if PhysicalLimit(1, 1, 0) != 0 {
		t.Error("a zero link rate must give no limit, not a division by zero")
	}
	for _, f := range []int{0, -1, 100_000} {
		if (Scale{Factor: f}).Check() == nil {
			t.Errorf("factor %d accepted", f)
		}
	}
}

// The simulated node reads the script the head writes (head.Script) and
// fetches what it names, and no more.
func TestParseScript(t *testing.T) {
	mac := net.HardwareAddr{2, 0xcd, 0, 0, 0, 7}
	c := contract.Cmdline{Node: true, Head: netip.MustParseAddr("10.97.0.1"), Token: "tok", Root: contract.RootRAM,
		Layers: []string{contract.CustomLayer}, BootMAC: mac}
	script, err := head.Script("node7", mac, c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseScript([]byte(script))
	if err != nil {
		t.Fatal(err)
	}
	if b.Cmdline.Token != "tok" || b.Cmdline.Head != c.Head || b.Cmdline.Root != contract.RootRAM {
		t.Errorf("parsed %+v from\n%s", b.Cmdline, script)
	}
	base := c.HTTPBase() + contract.NetbootPath
	want := []string{base + contract.KernelFile, base + contract.InitrdFor(contract.RootRAM),
		base + contract.BaseLayer, base + contract.CustomLayer}
	if got := b.Fetch(); !slices.Equal(got, want) {
		t.Errorf("fetches %q, want %q", got, want)
	}

	c.Root, c.Layers = contract.RootShared, nil
	script, _ = head.Script("node7", mac, c)
	b, err = ParseScript([]byte(script))
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Fetch(); len(got) != 2 {
		t.Errorf("shared root fetches %q, want kernel and initrd", got)
	}

	for _, bad := range []string{"#!ipxe\nboot\n", "#!ipxe\nkernel http://x/k clusterdebian.head=10.0.0.1\ninitrd http://x/i\n",
		"#!ipxe\nkernel http://x/k clusterdebian.token=t clusterdebian.head=10.0.0.1\n"} {
		if _, err := ParseScript([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestSummarize(t *testing.T) {
	traces := []*Trace{
		{MAC: "a", Name: "node2", Registered: 3 * time.Second, HTTPBytes: 10, DHCPRetransmits: 1},
		{MAC: "b", Name: "node3", Registered: 5 * time.Second, HTTPBytes: 20, TFTPRetransmits: 2, Restarts: 1, Errors: []string{"x"}},
	}
	s := Summarize(traces)
	if s.Registered != 2 || s.AllRegistered != 5*time.Second || s.HTTPBytes != 30 || s.Retried != 2 ||
		s.DHCPRetransmits != 1 || s.TFTPRetransmits != 2 || s.Restarts != 1 || len(s.FirstErrors) != 1 {
		t.Errorf("%+v", s)
	}
	traces = append(traces, &Trace{MAC: "c"})
	if s := Summarize(traces); s.AllRegistered != 0 || s.Registered != 2 {
		t.Errorf("one never registered: %+v", s)
	}
}

func TestCheck(t *testing.T) {
	ip := netip.MustParseAddr
	ok := func(mac, name, addr string) *Trace {
		return &Trace{MAC: mac, Name: name, Leases: []Lease{{IP: ip(addr), Hostname: name}, {IP: ip(addr), Hostname: name, IPXE: true}}}
	}
	traces := []*Trace{ok("a", "node2", "10.0.0.2"), ok("b", "node3", "10.0.0.3")}
	file := map[string][]netip.Addr{"a": {ip("10.0.0.2")}, "b": {ip("10.0.0.3")}}
	reg := map[string]string{"a": "node2", "b": "node3"}
	if c := Check(traces, file, reg); c != (Consistency{}) {
		t.Errorf("a clean storm: %+v", c)
	}

	// b's second ACK has another address and name; the file lost a; c
	// holds b's old address; the file gives it to two MACs.
	moved := &Trace{MAC: "b", Name: "node4", Leases: []Lease{{IP: ip("10.0.0.3"), Hostname: "node3"}, {IP: ip("10.0.0.4"), Hostname: "node4"}}}
	c3 := ok("c", "node3", "10.0.0.3")
	file = map[string][]netip.Addr{"b": {ip("10.0.0.4")}, "c": {ip("10.0.0.3")}, "d": {ip("10.0.0.3")}}
	reg = map[string]string{"a": "node2", "b": "node4", "c": "node3"}
	got := Check([]*Trace{ok("a", "node2", "10.0.0.2"), moved, c3}, file, reg)
	want := Consistency{NamesChanged: 1, LeasesLost: 2, GivenTwice: 1}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// Two nodes ending on one address.
	got = Check([]*Trace{ok("a", "node2", "10.0.0.2"), ok("b", "node2", "10.0.0.2")},
		map[string][]netip.Addr{"a": {ip("10.0.0.2")}, "b": {ip("10.0.0.2")}}, nil)
	if got.GivenTwice != 1 {
		t.Errorf("two nodes on one address: %+v", got)
	}
}
