package swarm

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// Defaults of the Broker.
const (
	// DefaultMaxUploads is how many transfers a peer serves at a time. A
	// node's link is as fast as node1's, so two uploads each get half of it;
	// more would only slow every one of them.
	DefaultMaxUploads = 2
	// DefaultLease is how long a redirect holds a peer's upload slot when
	// no report of its end comes (the node died, or its report was lost):
	// longer than a layer takes on a slow link.
	DefaultLease = 5 * time.Minute
)

// PeerState is what the Broker asks the registry about a peer: whether it
// runs (registered and not marked down), and since when it is registered
// (its agent serves its layers from before it registers).
type PeerState func(addr netip.Addr) (up bool, registered time.Time)

// Broker chooses, for each layer request, a peer to redirect it to, and
// keeps the counts of the swarm. Safe for concurrent use.
type Broker struct {
	// MaxUploads bounds each peer's concurrent transfers; 0 means
	// DefaultMaxUploads.
	MaxUploads int
	// Lease bounds how long a redirect without a report holds its slot; 0
	// means DefaultLease.
	Lease time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	peers map[netip.Addr]*peer
	// sent is, per (node, layer), the peer node1 last redirected the node
	// to, until its report comes or its lease runs out.
	sent map[fetch]redirect
	// Figures (Stats).
	node1Bytes, peerBytes   int64
	redirects, bad, failed  int64
	servedByNode1, fromPeer int64
	fromPeers               map[string]int64
}

type peer struct {
	// layers the peer holds, verified, and when it reported each.
	layers map[string]time.Time
	// bad is set when a node caught it serving a bad copy, or it broke a
	// transfer off: it is not offered again until it boots again (its next
	// report of a verified layer).
	bad    string
	served int64 // bytes it served, by the reports
}

type fetch struct {
	node  netip.Addr
	layer string
}

type redirect struct {
	peer  netip.Addr
	until time.Time
}

// Stats are the swarm's figures, for the status page and /metrics.
type Stats struct {
	// Node1Bytes and PeerBytes are the layer bytes node1 sent, and the
	// bytes peers sent by the nodes' reports.
	Node1Bytes int64 `json:"node1_bytes"`
	PeerBytes  int64 `json:"peer_bytes"`
	// Redirects is how many layer requests node1 sent to a peer;
	// Node1Layers how many complete layers it served itself; PeerLayers
	// how many layers nodes reported verified from a peer.
	Redirects   int64 `json:"redirects"`
	Node1Layers int64 `json:"node1_layers"`
	PeerLayers  int64 `json:"peer_layers"`
	// BadReports counts copies caught by their checksum; FailReports
	// transfers from a peer that broke off.
	BadReports  int64 `json:"bad_reports"`
	FailReports int64 `json:"fail_reports"`
	// Peers is every node that holds layers.
	Peers []PeerStats `json:"peers"`
	// FromPeers counts, per layer, the copies nodes got from a peer.
	FromPeers map[string]int64 `json:"from_peers"`
	// ImageBytes is the size of the image (every layer) node1 serves; the
	// head fills it in.
	ImageBytes int64 `json:"image_bytes"`
}

// PeerStats is one peer's part of Stats.
type PeerStats struct {
	Addr   string   `json:"addr"`
	Layers []string `json:"layers"`
	// Uploads is its transfers in progress (redirects without a report).
	Uploads int `json:"uploads"`
	// Served is the bytes it served, by the reports.
	Served int64 `json:"served_bytes"`
	// Bad, when set, says why it is no longer offered.
	Bad string `json:"bad,omitempty"`
}

func (b *Broker) init() {
	if b.peers == nil {
		b.peers = map[netip.Addr]*peer{}
		b.sent = map[fetch]redirect{}
		b.fromPeers = map[string]int64{}
	}
}

func (b *Broker) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func (b *Broker) max() int {
	if b.MaxUploads > 0 {
		return b.MaxUploads
	}
	return DefaultMaxUploads
}

func (b *Broker) lease() time.Duration {
	if b.Lease > 0 {
		return b.Lease
	}
	return DefaultLease
}

// uploads counts each peer's redirects whose lease runs, and drops the
// ones that ran out.
func (b *Broker) uploads(now time.Time) map[netip.Addr]int {
	n := map[netip.Addr]int{}
	for k, r := range b.sent {
		if !now.Before(r.until) {
			delete(b.sent, k)
			continue
		}
		n[r.peer]++
	}
	return n
}

// Choose returns the peer to redirect node's request for layer to, and
// takes one of its upload slots; ok is false when node1 should serve the
// layer itself: no peer holds it, or every one that does is down, bad,
// not yet serving (registered before it reported the layer) or busy
// (MaxUploads transfers). Among the free peers it takes the one with the
// fewest transfers, then the one that served the fewest bytes, then the
// lowest address.
func (b *Broker) Choose(node netip.Addr, layer string, state PeerState) (netip.Addr, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	now := b.now()
	// A node asking again drops its earlier redirect: it is not using it.
	delete(b.sent, fetch{node, layer})
	busy := b.uploads(now)
	var cands []netip.Addr
	for addr, p := range b.peers {
		at, holds := p.layers[layer]
		if !holds || addr == node || p.bad != "" || busy[addr] >= b.max() {
			continue
		}
		if state == nil {
			continue
		}
		if up, reg := state(addr); !up || reg.Before(at) {
			continue
		}
		cands = append(cands, addr)
	}
	if len(cands) == 0 {
		return netip.Addr{}, false
	}
	slices.SortFunc(cands, func(x, y netip.Addr) int {
		if d := busy[x] - busy[y]; d != 0 {
			return d
		}
		if sx, sy := b.peers[x].served, b.peers[y].served; sx != sy {
			if sx < sy {
				return -1
			}
			return 1
		}
		return x.Compare(y)
	})
	p := cands[0]
	b.sent[fetch{node, layer}] = redirect{peer: p, until: now.Add(b.lease())}
	b.redirects++
	return p, true
}

// Report records how node's fetch of layer ended (contract.SwarmOK,
// SwarmBad, SwarmFail), size being the layer's size in bytes. It releases
// the upload slot of the peer node1 redirected the node to, if any: that
// peer is credited the bytes (ok) or no longer offered (bad, fail). On ok,
// node holds the layer and may be offered once it registers. It returns the
// peer the fetch went to (invalid when node1 served it).
func (b *Broker) Report(node netip.Addr, layer, result string, size int64) netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	k := fetch{node, layer}
	r, redirected := b.sent[k]
	delete(b.sent, k)
	var from *peer
	if redirected {
		from = b.peers[r.peer]
	}
	switch result {
	case contract.SwarmOK:
		if from != nil {
			from.served += size
			b.peerBytes += size
			b.fromPeer++
			b.fromPeers[layer]++
		}
		p := b.peers[node]
		if p == nil {
			p = &peer{layers: map[string]time.Time{}}
			b.peers[node] = p
		}
		p.layers[layer] = b.now()
		// A node that fetched and verified a layer again has booted
		// again: whatever it served before is gone.
		p.bad = ""
	case contract.SwarmBad:
		b.bad++
		if from != nil {
			from.bad = "served a copy of " + layer + " with a wrong checksum to " + node.String()
		}
	case contract.SwarmFail:
		b.failed++
		if from != nil {
			from.bad = "broke off the transfer of " + layer + " to " + node.String()
		}
	}
	if !redirected {
		return netip.Addr{}
	}
	return r.peer
}

// Forget drops a peer (it left the cluster, or was pruned).
func (b *Broker) Forget(addr netip.Addr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.peers, addr)
}

// ServedByNode1 counts n bytes of a layer node1 sent itself; complete says
// the whole layer went out.
func (b *Broker) ServedByNode1(n int64, complete bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.node1Bytes += n
	if complete {
		b.servedByNode1++
	}
}

// Stats returns the swarm's figures, the peers in address order.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	busy := b.uploads(b.now())
	s := Stats{Node1Bytes: b.node1Bytes, PeerBytes: b.peerBytes, Redirects: b.redirects,
		Node1Layers: b.servedByNode1, PeerLayers: b.fromPeer, BadReports: b.bad, FailReports: b.failed,
		FromPeers: maps.Clone(b.fromPeers)}
	for addr, p := range b.peers {
		ps := PeerStats{Addr: addr.String(), Uploads: busy[addr], Served: p.served, Bad: p.bad}
		for l := range p.layers {
			ps.Layers = append(ps.Layers, l)
		}
		slices.Sort(ps.Layers)
		s.Peers = append(s.Peers, ps)
	}
	slices.SortFunc(s.Peers, func(x, y PeerStats) int {
		return netip.MustParseAddr(x.Addr).Compare(netip.MustParseAddr(y.Addr))
	})
	return s
}
