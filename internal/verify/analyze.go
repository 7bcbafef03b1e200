package verify

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
)

// Analyze fills r.Findings and r.Pass from r's nodes, links and MPI run,
// judged against r.Bar. It keeps no state: the same report gives the same
// findings.
func Analyze(r *Report) {
	var f []Finding
	add := func(node, peer, what, cause string) {
		f = append(f, Finding{Node: node, Peer: peer, What: what, Cause: cause})
	}
	b := r.Bar
	ok := func(n NodeResult) bool { return n.Error == "" }

	// Facts: each compared with the others'.
	maxSpeed, mtus, mems := 0, map[int]int{}, []float64{}
	for _, n := range r.Nodes {
		if ok(n) {
			maxSpeed = max(maxSpeed, n.SpeedMbit)
			mtus[n.MTU]++
			mems = append(mems, float64(n.MemTotalKiB))
		}
	}
	commonMTU := 0
	for _, m := range slices.Sorted(maps.Keys(mtus)) {
		if mtus[m] > mtus[commonMTU] {
			commonMTU = m
		}
	}
	medMem := median(mems)
	linkHint := map[string]string{} // node -> what is wrong with its card
	unmeasured := map[string]bool{}
	for _, n := range r.Nodes {
		if !ok(n) {
			unmeasured[n.Name] = true
			add(n.Name, "", "not measured", n.Error)
			continue
		}
		var hints []string
		if n.SpeedMbit > 0 && (n.SpeedMbit < maxSpeed || n.SpeedMbit < b.MinLinkMbit) {
			what := fmt.Sprintf("link %d Mbit/s", n.SpeedMbit)
			cause := fmt.Sprintf("link %d Mbit/s where the fastest is %d: a slower port, cable or card", n.SpeedMbit, maxSpeed)
			if n.SpeedMbit >= maxSpeed {
				cause = fmt.Sprintf("link %d Mbit/s, below the bar of %d", n.SpeedMbit, b.MinLinkMbit)
			}
			add(n.Name, "", what, cause)
			hints = append(hints, what)
		}
		if n.Duplex == "half" {
			add(n.Name, "", "half duplex", "half duplex: a duplex mismatch with the switch port (set both ends to auto)")
			hints = append(hints, "half duplex")
		}
		if len(mtus) > 1 && n.MTU != commonMTU {
			add(n.Name, "", fmt.Sprintf("MTU %d", n.MTU), fmt.Sprintf("MTU differs: %d where the others have %d", n.MTU, commonMTU))
			hints = append(hints, "MTU differs")
		}
		if medMem > 0 && float64(n.MemTotalKiB) < b.MinMemoryRatio*medMem {
			ratio := float64(n.MemTotalKiB) / medMem
			cause := fmt.Sprintf("%.0f%% of the others' memory", 100*ratio)
			if ratio > 0.4 && ratio < 0.6 {
				cause = "half the memory of the others"
			}
			add(n.Name, "", fmt.Sprintf("memory %d MiB, median %.0f MiB", n.MemTotalKiB/1024, medMem/1024), cause)
		}
		if off := math.Abs(n.ClockOffsetMS) / 1000; off > b.MaxClockOffsetSec {
			add(n.Name, "", fmt.Sprintf("clock offset %+.1f s", n.ClockOffsetMS/1000),
				fmt.Sprintf("clock %.1f s off node1's: time sync is not working", off))
		}
		if len(hints) > 0 {
			linkHint[n.Name] = strings.Join(hints, ", ")
		}
	}

	partners, slowWith := map[string]int{}, map[string][]string{}
	bad := slowLinks(r)
	for _, l := range r.Links {
		if unmeasured[l.A] || unmeasured[l.B] {
			continue // reported as the node's finding
		}
		partners[l.A]++
		partners[l.B]++
		if _, isBad := bad[l]; isBad {
			slowWith[l.A] = append(slowWith[l.A], l.B)
			slowWith[l.B] = append(slowWith[l.B], l.A)
		}
	}
	// A node slow with every partner (two at least, else node and path
	// cannot be told apart) is the fault; its links are explained by it.
	badNode := map[string]bool{}
	for _, n := range r.Nodes {
		if p := partners[n.Name]; p >= 2 && len(slowWith[n.Name]) == p {
			badNode[n.Name] = true
			var whats []string
			for _, l := range r.Links {
				if why, isBad := bad[l]; isBad && (l.A == n.Name || l.B == n.Name) {
					whats = append(whats, other(l, n.Name)+": "+why)
				}
			}
			cause := "slow with every partner: node's link (its card, cable or switch port)"
			if h := linkHint[n.Name]; h != "" {
				cause += "; " + h
			}
			add(n.Name, "", strings.Join(whats, "; "), cause)
		}
	}
	for _, l := range r.Links {
		why, isBad := bad[l]
		if !isBad || badNode[l.A] || badNode[l.B] {
			continue
		}
		cause := fmt.Sprintf("slow only with %s: that pair's path (the cables and switch ports between them)", l.B)
		if partners[l.A] < 2 {
			cause = "slow between the only two nodes: cannot tell a node from the path"
		}
		add(l.A, l.B, why, cause)
	}

	if m := r.MPI; m != nil && b.MPI && !m.OK {
		add("", "", "MPI ping-pong and allreduce failed", m.Error)
	}
	r.Findings, r.Pass = f, len(f) == 0
}

// latencyFloorMicros is the least usual round trip that MaxLatencyRatio
// multiplies, in µs. A LAN's round trip through two kernels is some tens
// to hundreds of µs, and a busy machine's scheduling adds tens of µs to
// any one of them: without the floor, five times a usual 12 µs (two
// network namespaces) would call a pair slow at 60 µs, which is noise, not
// a slow card or cable (those cost milliseconds).
const latencyFloorMicros = 100

// slowLinks are r's links below the bar, each with the reason in words,
// leaving out those of nodes that could not be measured at all. The usual
// values are the median over nodes of each node's best pair, which one bad
// node cannot drag down.
func slowLinks(r *Report) map[Link]string {
	b := r.Bar
	unmeasured := map[string]bool{}
	for _, n := range r.Nodes {
		unmeasured[n.Name] = n.Error != ""
	}
	best, fastest := map[string]float64{}, map[string]float64{}
	for _, l := range r.Links {
		if l.Error != "" {
			continue
		}
		for _, n := range []string{l.A, l.B} {
			best[n] = max(best[n], l.Mbit())
			if v, seen := fastest[n]; !seen || l.RTTMicros < v {
				fastest[n] = l.RTTMicros
			}
		}
	}
	usualMbit := median(slices.Collect(maps.Values(best)))
	usualRTT := median(slices.Collect(maps.Values(fastest)))
	slow := func(l Link) string {
		switch {
		case l.Error != "":
			return "failed: " + l.Error
		case l.Mbit() < b.MinBandwidthRatio*usualMbit:
			return fmt.Sprintf("%.0f Mbit/s, %.0f%% of the usual %.0f", l.Mbit(), 100*l.Mbit()/usualMbit, usualMbit)
		case b.MinBandwidthMbit > 0 && l.Mbit() < b.MinBandwidthMbit:
			return fmt.Sprintf("%.0f Mbit/s, below the bar of %.0f", l.Mbit(), b.MinBandwidthMbit)
		case usualRTT > 0 && l.RTTMicros > b.MaxLatencyRatio*max(usualRTT, latencyFloorMicros):
			return fmt.Sprintf("round trip %.0f µs, %.1f times the usual %.0f", l.RTTMicros, l.RTTMicros/usualRTT, usualRTT)
		}
		return ""
	}
	bad := map[Link]string{}
	for _, l := range r.Links {
		if unmeasured[l.A] || unmeasured[l.B] {
			continue
		}
		if why := slow(l); why != "" {
			bad[l] = why
		}
	}
	return bad
}

// other is l's node that is not n.
func other(l Link, n string) string {
	if l.A == n {
		return l.B
	}
	return l.A
}
