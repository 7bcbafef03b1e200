package swarm

import (
	"context"
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
	// DefaultNode1Uploads is how many layer transfers node1 serves itself
	// at a time, sized like a peer's: node1's link is no faster than a
	// node's, and node1 also sends every node its kernel and initrd.
	DefaultNode1Uploads = DefaultMaxUploads
	// DefaultMaxWait bounds how long a layer request waits in node1's
	// queue before node1 serves it itself, past its cap. The initrd's
	// wget gives up after 900 s (live-layers.sh: timeout 900; busybox
	// wget's read timeout is 900 s too), and that includes the transfer
	// that follows the wait: 5 min leaves 10 for it.
	DefaultMaxWait = 5 * time.Minute
)

// PeerState is what the Broker asks the registry about a peer: whether it
// runs (registered and not marked down), and since when it is registered
// (its agent serves its layers from before it registers).
type PeerState func(addr netip.Addr) (up bool, registered time.Time)

// Broker chooses, for each layer request, a peer to redirect it to, or
// node1, and keeps the counts of the swarm. Safe for concurrent use.
//
// node1 serves at most Node1Uploads layer transfers at a time, and only
// copies nobody in the swarm can give: it seeds the swarm and leaves the
// rest to the peers, so that what it sends of a layer does not grow with
// the number of nodes (issue 13: node1 sends at most 3 images whatever N
// is). A request (Route) that finds no free peer and no node1 slot it may
// take waits in a FIFO queue until a peer's slot frees, a node that
// reported the layer registers (Wake), node1's slot frees, or MaxWait
// passes, when node1 serves it anyway.
type Broker struct {
	// MaxUploads bounds each peer's concurrent transfers; 0 means
	// DefaultMaxUploads.
	MaxUploads int
	// Lease bounds how long a redirect without a report holds its slot; 0
	// means DefaultLease.
	Lease time.Duration
	// Node1Uploads bounds node1's own concurrent layer transfers for
	// routed requests; 0 means DefaultNode1Uploads.
	Node1Uploads int
	// MaxWait bounds a request's wait in the queue; 0 means
	// DefaultMaxWait. It must stay below what the initrd's fetch
	// tolerates (see DefaultMaxWait).
	MaxWait time.Duration
	// State is the registry's word on peers, for Route; nil offers no
	// peer.
	State PeerState
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// After returns a channel that receives once d has passed, and a
	// function that stops it; nil means a time.Timer. Tests pass a fake.
	After func(d time.Duration) (<-chan time.Time, func())

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
	// node1 is node1's layer transfers in progress (routes not Done).
	node1 int
	// coming is, per (node, layer), when node1 finished sending the node
	// a whole copy: the node is about to report it verified, and counts
	// as a source until its report comes or a lease passes.
	coming map[fetch]time.Time
	// queue holds the waiting requests, oldest first.
	queue []*waiter
	// Figures of the queue (Stats).
	waits, overflows int64
}

// waiter is a request in the queue; grant receives its route.
type waiter struct {
	node  netip.Addr
	layer string
	grant chan Route
}

// Route is where a layer request goes: a redirect to Peer, or, with Peer
// invalid, node1's own transfer, whose end the caller must tell with
// Done.
type Route struct {
	// Peer, when valid, is the peer to redirect the request to.
	Peer netip.Addr
	// Waited is how long the request waited in the queue (0: not queued).
	Waited time.Duration
	// Overflow says node1 serves past its cap: the wait bound ran out
	// (or the node asked node1 directly, Direct).
	Overflow bool
	release  func(whole bool)
}

// Done ends node1's transfer and frees its slot for the next request in
// the queue; whole says the whole layer went out: the node is then taken
// for a source of the layer until its report (it reports within seconds,
// and registers soon after), so that node1 does not send the next node
// another copy meanwhile. It does nothing for a redirect, and when called
// again.
func (r Route) Done(whole bool) {
	if r.release != nil {
		r.release(whole)
	}
}

type peer struct {
	// layers the peer holds, verified, and when it reported each.
	layers map[string]time.Time
	// bad is set when a node caught it serving a bad copy, or it broke a
	// transfer off: it is not offered again until it boots again (its next
	// report of a verified layer).
	bad    string
	served int64 // bytes it served, by the reports
	// joined is set once the registry showed it registered after its
	// last verified layer: it booted. When it is gone from the registry
	// since, it left or is down, and is not about to serve.
	joined bool
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
	// Node1Uploads is node1's layer transfers in progress (routed or
	// direct); Queued the requests waiting now. Waits counts the requests
	// that waited, Overflows those node1 served past its cap because the
	// wait bound ran out.
	Node1Uploads int   `json:"node1_uploads"`
	Queued       int   `json:"queued"`
	Waits        int64 `json:"waits"`
	Overflows    int64 `json:"overflows"`
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
		b.coming = map[fetch]time.Time{}
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

func (b *Broker) node1Max() int {
	if b.Node1Uploads > 0 {
		return b.Node1Uploads
	}
	return DefaultNode1Uploads
}

func (b *Broker) maxWait() time.Duration {
	if b.MaxWait > 0 {
		return b.MaxWait
	}
	return DefaultMaxWait
}

func (b *Broker) after(d time.Duration) (<-chan time.Time, func()) {
	if b.After != nil {
		return b.After(d)
	}
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
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
// takes one of its upload slots; ok is false when no peer is free: no
// peer holds the layer, or every one that does is down, bad, not yet
// serving (registered before it reported the layer) or busy (MaxUploads
// transfers). Among the free peers it takes the one with the fewest
// transfers, then the one that served the fewest bytes, then the lowest
// address. Choose neither waits nor counts node1's transfers: Route does.
func (b *Broker) Choose(node netip.Addr, layer string, state PeerState) (netip.Addr, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	now := b.now()
	// A node asking again drops its earlier redirect: it is not using it.
	delete(b.sent, fetch{node, layer})
	p, ok := b.pick(node, layer, cached(state), b.uploads(now))
	if ok {
		b.redirect(node, layer, p, now)
	}
	return p, ok
}

// stateCache asks a PeerState once per peer: one dispatch of the queue
// asks about the same peers for many waiters.
type stateCache struct {
	f PeerState
	m map[netip.Addr]peerState
}

type peerState struct {
	up  bool
	reg time.Time
}

func cached(f PeerState) *stateCache { return &stateCache{f: f, m: map[netip.Addr]peerState{}} }

func (c *stateCache) get(a netip.Addr) (bool, time.Time, bool) {
	if c.f == nil {
		return false, time.Time{}, false
	}
	s, ok := c.m[a]
	if !ok {
		s.up, s.reg = c.f(a)
		c.m[a] = s
	}
	return s.up, s.reg, true
}

// pick is the free peer Choose describes, busy being each peer's
// transfers. b.mu is held.
func (b *Broker) pick(node netip.Addr, layer string, st *stateCache, busy map[netip.Addr]int) (netip.Addr, bool) {
	var cands []netip.Addr
	for addr, p := range b.peers {
		at, holds := p.layers[layer]
		if !holds || addr == node || p.bad != "" || busy[addr] >= b.max() {
			continue
		}
		if up, reg, known := st.get(addr); !known || !up || reg.Before(at) {
			continue
		}
		p.joined = true
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
	return cands[0], true
}

// redirect records that node was sent to peer p for layer: p's slot is
// taken until the node's report or the lease's end. b.mu is held.
func (b *Broker) redirect(node netip.Addr, layer string, p netip.Addr, now time.Time) {
	b.sent[fetch{node, layer}] = redirect{peer: p, until: now.Add(b.lease())}
	b.redirects++
}

// sourced reports whether the swarm can give node a copy of layer without
// node1: a good peer other than node holds it and is offered (free or
// busy), or reported it verified less than a lease ago and has not
// registered since (it is booting, and is offered once it registers; one
// that registered and then left or went down is not). b.mu is held.
func (b *Broker) sourced(node netip.Addr, layer string, st *stateCache, now time.Time) bool {
	for addr, p := range b.peers {
		at, holds := p.layers[layer]
		if !holds || addr == node || p.bad != "" {
			continue
		}
		up, reg, known := st.get(addr)
		if !known {
			continue
		}
		if up && !reg.Before(at) {
			p.joined = true
			return true
		}
		if !p.joined && reg.Before(at) && now.Before(at.Add(b.lease())) {
			return true
		}
	}
	for k, at := range b.coming {
		if !now.Before(at.Add(b.lease())) {
			delete(b.coming, k) // its report never came
			continue
		}
		if k.layer == layer && k.node != node {
			return true
		}
	}
	return false
}

// node1Route takes one of node1's slots for node's copy of layer. b.mu
// is held.
func (b *Broker) node1Route(node netip.Addr, layer string, overflow bool) Route {
	b.node1++
	var once sync.Once
	return Route{Overflow: overflow, release: func(whole bool) {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.node1--
			if whole {
				b.coming[fetch{node, layer}] = b.now()
			}
			b.dispatch()
		})
	}}
}

// grant routes w if it can go somewhere now: to a free peer, else to
// node1 when a node1 slot is free and nobody else can give the layer.
// busy is updated. b.mu is held.
func (b *Broker) grant(w *waiter, st *stateCache, busy map[netip.Addr]int, now time.Time) (Route, bool) {
	if p, ok := b.pick(w.node, w.layer, st, busy); ok {
		b.redirect(w.node, w.layer, p, now)
		busy[p]++
		return Route{Peer: p}, true
	}
	if b.node1 < b.node1Max() && !b.sourced(w.node, w.layer, st, now) {
		return b.node1Route(w.node, w.layer, false), true
	}
	return Route{}, false
}

// dispatch routes the queued requests that can go somewhere now, oldest
// first; the others keep their place. b.mu is held.
func (b *Broker) dispatch() {
	if len(b.queue) == 0 {
		return
	}
	now := b.now()
	busy := b.uploads(now)
	st := cached(b.State)
	kept := b.queue[:0]
	for _, w := range b.queue {
		if r, ok := b.grant(w, st, busy, now); ok {
			w.grant <- r // buffered, received once
			continue
		}
		kept = append(kept, w)
	}
	clear(b.queue[len(kept):])
	b.queue = kept
}

// dequeue takes w out of the queue; false when it was routed already.
// b.mu is held.
func (b *Broker) dequeue(w *waiter) bool {
	i := slices.Index(b.queue, w)
	if i < 0 {
		return false
	}
	b.queue = slices.Delete(b.queue, i, i+1)
	return true
}

// Route says where node's GET of layer goes: a redirect to a free peer
// (Choose's order), or node1 itself when it has a free slot
// (Node1Uploads) and no peer holds the layer, is offered or is about to
// be (reported it less than a lease ago). Else the request waits, behind
// earlier ones, until one of those holds (a report, Wake, a node1 route's
// Done), or MaxWait passes: then node1 serves it past its cap
// (Route.Overflow). When node1 serves, the caller calls Done at the
// transfer's end. An error (ctx's) means the request ended while it
// waited (the client went away): it holds nothing.
func (b *Broker) Route(ctx context.Context, node netip.Addr, layer string) (Route, error) {
	b.mu.Lock()
	b.init()
	start := b.now()
	// A node asking again drops its earlier redirect: it is not using it.
	delete(b.sent, fetch{node, layer})
	w := &waiter{node: node, layer: layer, grant: make(chan Route, 1)}
	b.queue = append(b.queue, w)
	b.dispatch()
	select {
	case r := <-w.grant:
		b.mu.Unlock()
		return r, nil
	default:
	}
	b.waits++
	b.mu.Unlock()

	timeout, stop := b.after(b.maxWait())
	defer stop()
	waited := func(r Route) Route {
		r.Waited = b.now().Sub(start)
		return r
	}
	select {
	case r := <-w.grant:
		return waited(r), nil
	case <-timeout:
		b.mu.Lock()
		defer b.mu.Unlock()
		if !b.dequeue(w) {
			return waited(<-w.grant), nil
		}
		b.overflows++
		return waited(b.node1Route(node, layer, true)), nil
	case <-ctx.Done():
		b.mu.Lock()
		if b.dequeue(w) {
			b.mu.Unlock()
			return Route{}, ctx.Err()
		}
		r := <-w.grant
		if r.Peer.IsValid() {
			// Routed as it left: the redirect is never sent.
			delete(b.sent, fetch{node, layer})
			b.redirects--
			b.dispatch()
			b.mu.Unlock()
		} else {
			b.mu.Unlock()
			r.Done(false)
		}
		return Route{}, ctx.Err()
	}
}

// Direct takes a node1 slot for node's request of layer that asked node1
// itself (contract.SwarmDirectQuery: a retry after a bad or broken copy),
// which node1 serves at once, past its cap; the caller calls Done at the
// transfer's end. Counting it keeps queued requests off node1 meanwhile.
func (b *Broker) Direct(node netip.Addr, layer string) Route {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	return b.node1Route(node, layer, true)
}

// Wake looks at the queue again: the registry changed (a node that
// reported layers registered and can be offered, or a peer went down).
func (b *Broker) Wake() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	// Note who registered since its report, before it can leave again.
	st := cached(b.State)
	for addr, p := range b.peers {
		for _, at := range p.layers {
			if up, reg, known := st.get(addr); known && up && !reg.Before(at) {
				p.joined = true
			}
		}
	}
	b.dispatch()
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
	delete(b.coming, k)
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
		p.bad, p.joined = "", false
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
	// A freed slot, a new holder, a peer no longer offered: the queue
	// may move.
	b.dispatch()
	if !redirected {
		return netip.Addr{}
	}
	return r.peer
}

// Forget drops a peer (it left the cluster, or was pruned).
func (b *Broker) Forget(addr netip.Addr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	delete(b.peers, addr)
	b.dispatch()
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
		FromPeers: maps.Clone(b.fromPeers), Node1Uploads: b.node1, Queued: len(b.queue), Waits: b.waits, Overflows: b.overflows}
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
