package bootstorm

import (
	"net/netip"
	"time"
)

// Summary is a storm's figures, from the nodes' traces.
type Summary struct {
	Nodes, Registered int
	// AllRegistered is when the last node registered, since the storm's
	// start; zero unless every node did.
	AllRegistered time.Duration
	// HTTPBytes and TFTPBytes are what the nodes received in all;
	// PeerBytes the part of HTTPBytes that peers sent.
	HTTPBytes, TFTPBytes, PeerBytes int64
	// LayerRefetches counts layer copies refused and fetched again.
	LayerRefetches int
	// DHCPRetransmits and TFTPRetransmits are totals; Retried counts the
	// nodes that sent anything twice, Restarts the boots begun again.
	DHCPRetransmits, TFTPRetransmits, Retried, Restarts int
	Heartbeats, HeartbeatErrors                         int
	// FirstErrors holds up to five nodes' errors, for the log.
	FirstErrors []string
}

// Summarize adds up the traces of one storm.
func Summarize(traces []*Trace) Summary {
	s := Summary{Nodes: len(traces)}
	for _, tr := range traces {
		if tr.Name != "" {
			s.Registered++
			s.AllRegistered = max(s.AllRegistered, tr.Registered)
		}
		s.HTTPBytes += tr.HTTPBytes
		s.TFTPBytes += tr.TFTPBytes
		s.PeerBytes += tr.PeerBytes
		s.LayerRefetches += tr.LayerRefetches
		s.DHCPRetransmits += tr.DHCPRetransmits
		s.TFTPRetransmits += tr.TFTPRetransmits
		if tr.DHCPRetransmits+tr.TFTPRetransmits > 0 {
			s.Retried++
		}
		s.Restarts += tr.Restarts
		s.Heartbeats += tr.Heartbeats
		s.HeartbeatErrors += tr.HeartbeatErrors
		if len(tr.Errors) > 0 && len(s.FirstErrors) < 5 {
			s.FirstErrors = append(s.FirstErrors, tr.MAC+": "+tr.Errors[0])
		}
	}
	if s.Registered < s.Nodes {
		s.AllRegistered = 0
	}
	return s
}

// Consistency is what a storm with head restarts did to names and leases
// (issue 15).
type Consistency struct {
	// NamesChanged counts nodes that were called by more than one name:
	// in DHCP's host name (option 12) across their ACKs, at registration,
	// or in the registry at the end.
	NamesChanged int
	// LeasesLost counts nodes whose address changed between ACKs (the head
	// forgot the lease it had given), or whose last address is not theirs
	// in the head's lease file at the end.
	LeasesLost int
	// GivenTwice counts addresses that two nodes hold at the end (last
	// ACK) or that the lease file gives to two MACs.
	GivenTwice int
}

// Check compares the nodes' traces with the head's lease file (MAC to
// address) and registry (MAC to name) at the end of the storm.
func Check(traces []*Trace, leaseFile map[string][]netip.Addr, registry map[string]string) Consistency {
	var c Consistency
	holder := map[netip.Addr]string{}
	twice := map[netip.Addr]bool{}
	for _, tr := range traces {
		names := map[string]bool{}
		addrs := map[netip.Addr]bool{}
		for _, l := range tr.Leases {
			if l.Hostname != "" {
				names[l.Hostname] = true
			}
			addrs[l.IP] = true
		}
		if tr.Name != "" {
			names[tr.Name] = true
		}
		if n := registry[tr.MAC]; n != "" {
			names[n] = true
		}
		if len(names) > 1 {
			c.NamesChanged++
		}
		if len(tr.Leases) == 0 {
			continue
		}
		last := tr.Leases[len(tr.Leases)-1].IP
		inFile := false
		for _, a := range leaseFile[tr.MAC] {
			inFile = inFile || a == last
		}
		if len(addrs) > 1 || !inFile {
			c.LeasesLost++
		}
		if h, ok := holder[last]; ok && h != tr.MAC {
			twice[last] = true
		}
		holder[last] = tr.MAC
	}
	owner := map[netip.Addr]string{}
	for mac, as := range leaseFile {
		for _, a := range as {
			if o, ok := owner[a]; ok && o != mac {
				twice[a] = true
			}
			owner[a] = mac
		}
	}
	c.GivenTwice = len(twice)
	return c
}
