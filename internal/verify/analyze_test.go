package verify

import (
	"fmt"
	"strings"
	"testing"
)

// cluster is n healthy nodes, every pair at 400 Mbit/s and 300 µs.
func cluster(n int) *Report {
	r := &Report{Bar: DefaultBar()}
	for i := 1; i <= n; i++ {
		r.Nodes = append(r.Nodes, NodeResult{Facts: Facts{Name: fmt.Sprintf("node%d", i), SpeedMbit: 1000,
			Duplex: "full", MTU: 1500, Cores: 4, MemTotalKiB: 8 << 20}})
	}
	for _, round := range Rounds(n) {
		for _, p := range round {
			r.Links = append(r.Links, Link{A: r.Nodes[p.A].Name, B: r.Nodes[p.B].Name, RTTMicros: 300, MbitAB: 400, MbitBA: 410})
		}
	}
	return r
}

// slowDown sets the links of pair, or of every pair with node when peer is
// "", to mbit one way.
func slowDown(r *Report, node, peer string, mbit float64) {
	for i, l := range r.Links {
		if (l.A == node || l.B == node) && (peer == "" || l.A == peer || l.B == peer) {
			r.Links[i].MbitBA = mbit
		}
	}
}

func findings(r *Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "%s|%s|%s|%s\n", f.Node, f.Peer, f.What, f.Cause)
	}
	return b.String()
}

func TestAnalyzeHealthy(t *testing.T) {
	for n := 1; n <= 8; n++ {
		r := cluster(n)
		Analyze(r)
		if !r.Pass || len(r.Findings) != 0 {
			t.Errorf("n=%d healthy: pass=%v findings:\n%s", n, r.Pass, findings(r))
		}
	}
}

func TestBadNodeVersusBadPair(t *testing.T) {
	for n := 3; n <= 8; n++ {
		// One node slow with everyone: that node, not its pairs.
		r := cluster(n)
		slowDown(r, "node2", "", 19)
		Analyze(r)
		if r.Pass || len(r.Findings) != 1 {
			t.Fatalf("n=%d bad node2: want one finding, got:\n%s", n, findings(r))
		}
		if f := r.Findings[0]; f.Node != "node2" || f.Peer != "" || !strings.Contains(f.Cause, "slow with every partner") || !strings.Contains(f.What, "19 Mbit/s") {
			t.Errorf("n=%d bad node2: %+v", n, f)
		}

		// One pair slow: that pair, neither node.
		r = cluster(n)
		slowDown(r, "node2", "node3", 19)
		Analyze(r)
		if r.Pass || len(r.Findings) != 1 {
			t.Fatalf("n=%d bad pair: want one finding, got:\n%s", n, findings(r))
		}
		if f := r.Findings[0]; f.Node != "node2" || f.Peer != "node3" || !strings.Contains(f.Cause, "slow only with node3") {
			t.Errorf("n=%d bad pair node2-node3: %+v", n, f)
		}
	}
	// Two nodes: a slow link is only ever a pair, and says so.
	r := cluster(2)
	r.Bar.MinBandwidthMbit = 100
	slowDown(r, "node2", "", 19)
	Analyze(r)
	if len(r.Findings) != 1 || !strings.Contains(r.Findings[0].Cause, "cannot tell") {
		t.Errorf("two nodes, slow link:\n%s", findings(r))
	}
}

func TestLatencyAndFailedLink(t *testing.T) {
	r := cluster(5)
	for i, l := range r.Links {
		if l.A == "node4" || l.B == "node4" {
			r.Links[i].RTTMicros = 5000
		}
	}
	Analyze(r)
	if len(r.Findings) != 1 || r.Findings[0].Node != "node4" || !strings.Contains(r.Findings[0].What, "round trip 5000") {
		t.Errorf("node4 with a slow round trip:\n%s", findings(r))
	}
	// Below the floor, a spike of a few times a microsecond round trip
	// (two namespaces on a busy machine) is noise, not a slow pair.
	r = cluster(5)
	for i, l := range r.Links {
		r.Links[i].RTTMicros = 12
		if l.A == "node4" || l.B == "node4" {
			r.Links[i].RTTMicros = 67
		}
	}
	Analyze(r)
	if len(r.Findings) != 0 {
		t.Errorf("round trips of 67 µs among 12 µs ones:\n%s", findings(r))
	}
	r = cluster(4)
	r.Links[0].Error = "connection refused"
	Analyze(r)
	if len(r.Findings) != 1 || r.Findings[0].Peer == "" || !strings.Contains(r.Findings[0].What, "connection refused") {
		t.Errorf("a failed link:\n%s", findings(r))
	}
}

func TestOutlierCauses(t *testing.T) {
	for _, c := range []struct {
		name  string
		spoil func(n *NodeResult)
		what  string
		cause string
	}{
		{"slow link", func(n *NodeResult) { n.SpeedMbit = 100 }, "link 100 Mbit/s", "where the fastest is 1000"},
		{"half duplex", func(n *NodeResult) { n.Duplex = "half" }, "half duplex", "duplex mismatch"},
		{"MTU", func(n *NodeResult) { n.MTU = 9000 }, "MTU 9000", "MTU differs: 9000 where the others have 1500"},
		{"memory", func(n *NodeResult) { n.MemTotalKiB = 4 << 20 }, "memory 4096 MiB, median 8192 MiB", "half the memory of the others"},
		{"little memory", func(n *NodeResult) { n.MemTotalKiB = 1 << 20 }, "memory 1024 MiB, median 8192 MiB", "12% of the others' memory"},
		{"clock", func(n *NodeResult) { n.ClockOffsetMS = -2300 }, "clock offset -2.3 s", "clock 2.3 s off"},
		{"unreachable", func(n *NodeResult) { n.Error = "ssh: no route to host" }, "not measured", "ssh: no route to host"},
	} {
		r := cluster(4)
		c.spoil(&r.Nodes[2])
		Analyze(r)
		if r.Pass || len(r.Findings) != 1 {
			t.Errorf("%s: want one finding, got:\n%s", c.name, findings(r))
			continue
		}
		f := r.Findings[0]
		if f.Node != "node3" || f.What != c.what || !strings.Contains(f.Cause, c.cause) {
			t.Errorf("%s: got %+v, want node3, %q, cause with %q", c.name, f, c.what, c.cause)
		}
	}
	// A card that does not report its speed (virtio) is no finding, nor is
	// a clock within the bar.
	r := cluster(3)
	r.Nodes[1].SpeedMbit, r.Nodes[1].Duplex, r.Nodes[2].ClockOffsetMS = 0, "", 1900
	Analyze(r)
	if !r.Pass {
		t.Errorf("unknown speed, clock 1.9 s off:\n%s", findings(r))
	}
	// A bad node's slow card is named in its cause.
	r = cluster(3)
	r.Nodes[0].SpeedMbit = 100
	slowDown(r, "node1", "", 90)
	Analyze(r)
	if len(r.Findings) != 2 || !strings.Contains(r.Findings[1].Cause, "slow with every partner: node's link (its card, cable or switch port); link 100 Mbit/s") {
		t.Errorf("node1 at 100 Mbit/s:\n%s", findings(r))
	}
	// MPI failing fails the run unless the bar leaves it out.
	r = cluster(3)
	r.MPI = &MPIResult{Error: "mpirun: exit 1"}
	Analyze(r)
	if r.Pass {
		t.Error("a failed MPI run passed")
	}
	r.Bar.MPI = false
	Analyze(r)
	if !r.Pass {
		t.Errorf("a failed MPI run with mpi = false in the bar:\n%s", findings(r))
	}
}

func TestBarSet(t *testing.T) {
	b := DefaultBar()
	if err := b.SetAll([]string{"min_bandwidth_ratio=0.3", "max_clock_offset_s = 2.5", "min_link_mbit=1000", "mpi=false"}); err != nil {
		t.Fatal(err)
	}
	if b.MinBandwidthRatio != 0.3 || b.MaxClockOffsetSec != 2.5 || b.MinLinkMbit != 1000 || b.MPI {
		t.Errorf("after SetAll: %+v", b)
	}
	for in, want := range map[string]string{
		"min_bandwidth_ratio=fast": `min_bandwidth_ratio: "fast" is not a number`,
		"min_bandwidth_ratio=1.5":  "min_bandwidth_ratio: 1.5 is outside 0..1",
		"max_latency_ratio=0.5":    "max_latency_ratio: 0.5 is outside 1..",
		"min_link_mbit=1G":         `min_link_mbit: "1G" is not a whole number`,
		"max_clock_offset_s=0":     "max_clock_offset_s: 0 would fail every node",
		"mpi=maybe":                `mpi: "maybe" is not true or false`,
		"speed=1":                  `unknown key "speed"`,
		"min_memory_ratio":         "want key=value",
		"min_memory_ratio=NaN":     "min_memory_ratio: NaN is outside",
	} {
		b := DefaultBar()
		err := b.SetAll([]string{in})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one with %q", in, err, want)
		}
	}
	if err := DefaultBar().Validate(); err != nil {
		t.Errorf("the default bar: %v", err)
	}
}

func TestWriteTable(t *testing.T) {
	r := cluster(3)
	slowDown(r, "node3", "", 19)
	r.MPI = &MPIResult{Ranks: 3, OK: true, PingPongMicros: 80, AllreduceMicros: 150}
	Analyze(r)
	var b strings.Builder
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"node1  ", "1000/full", "400/300µs", "19/300µs",
		"MPI: 3 ranks, ping-pong 80 µs", "BELOW THE BAR: node3: ", "slow with every partner", "FAIL (1 below the bar): 3 nodes, 3 pairs"} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
}
