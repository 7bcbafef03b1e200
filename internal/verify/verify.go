// Package verify is the cluster's acceptance test: what each node reports
// about itself (link speed, duplex, MTU, cores, memory, clock offset from
// node1), the network measured pair by pair in rounds of disjoint pairs
// (O(N) rounds for N nodes), an MPI run across all nodes, and the analysis
// that turns these into findings with a likely cause ("slow with every
// partner: node's link", "MTU differs", "clock 2.3 s off") judged against a
// configurable bar.
//
// The measurements go over a small TCP probe protocol (probe.go) that each
// node serves for the length of a run; host effects (sysfs, starting the
// probe on a node, MPI) sit behind seams the caller provides.
package verify

import (
	"time"
)

// Facts is what a node reports about itself.
type Facts struct {
	Name string `json:"name"`
	// Interface is the cluster network card: the one holding the node's
	// cluster address.
	Interface string `json:"interface"`
	// SpeedMbit is the link speed from /sys/class/net/<if>/speed, in
	// Mbit/s; 0 when the driver does not say (virtio, some Wi-Fi).
	SpeedMbit int `json:"speed_mbit"`
	// Duplex is "full", "half", or "" when the driver does not say.
	Duplex      string `json:"duplex"`
	MTU         int    `json:"mtu"`
	Cores       int    `json:"cores"`
	MemTotalKiB uint64 `json:"mem_total_kib"`
}

// NodeResult is one node's part of a Report.
type NodeResult struct {
	Facts
	IP string `json:"ip"`
	// ClockOffsetMS is the node's clock minus node1's, in milliseconds,
	// from the round trip with the least delay (NTP's method).
	ClockOffsetMS float64 `json:"clock_offset_ms"`
	// Error is why the node could not be measured; the other fields are
	// then partial.
	Error string `json:"error,omitempty"`
}

// Link is the measurement of one pair of nodes.
type Link struct {
	A string `json:"a"`
	B string `json:"b"`
	// RTTMicros is the median round trip of a small message, in µs.
	RTTMicros float64 `json:"rtt_us"`
	// MbitAB is the TCP throughput from A to B, MbitBA from B to A, in
	// Mbit/s.
	MbitAB float64 `json:"mbit_ab"`
	MbitBA float64 `json:"mbit_ba"`
	Error  string  `json:"error,omitempty"`
}

// Mbit is the pair's throughput: the slower direction, since a link
// shaped or broken one way slows every exchange.
func (l Link) Mbit() float64 { return min(l.MbitAB, l.MbitBA) }

// MPIResult is the MPI run across all nodes.
type MPIResult struct {
	Ranks int `json:"ranks"`
	// PingPongMicros is the half round trip of a small message between
	// rank 0 and each other rank, the largest of them, in µs.
	PingPongMicros float64 `json:"pingpong_us"`
	// AllreduceMicros is the time of one small MPI_Allreduce across all
	// ranks, averaged, in µs.
	AllreduceMicros float64 `json:"allreduce_us"`
	OK              bool    `json:"ok"`
	Error           string  `json:"error,omitempty"`
}

// Finding is something below the bar, with its likely cause.
type Finding struct {
	// Node is the node at fault; Peer is set too when only a pair is.
	Node string `json:"node"`
	Peer string `json:"peer,omitempty"`
	// What is the measurement ("bandwidth 18 Mbit/s, 5% of the usual
	// 380"), Cause the likely reason ("slow with every partner: node's
	// link").
	What  string `json:"what"`
	Cause string `json:"cause"`
}

// Report is one verify run.
type Report struct {
	Time     time.Time    `json:"time"`
	Seconds  float64      `json:"seconds"` // how long the run took
	Bar      Bar          `json:"bar"`
	Nodes    []NodeResult `json:"nodes"`
	Rounds   int          `json:"rounds"`
	Links    []Link       `json:"links"`
	MPI      *MPIResult   `json:"mpi,omitempty"`
	Findings []Finding    `json:"findings"`
	// Pass is false when there is any finding.
	Pass bool `json:"pass"`
}

// Link returns the measurement of the pair a, b in either order.
func (r *Report) Link(a, b string) (Link, bool) {
	for _, l := range r.Links {
		if (l.A == a && l.B == b) || (l.A == b && l.B == a) {
			return l, true
		}
	}
	return Link{}, false
}
