package swarm

import (
	"net/netip"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

const layer = contract.BaseLayer

var (
	p2 = netip.MustParseAddr("10.99.0.2")
	p3 = netip.MustParseAddr("10.99.0.3")
	n4 = netip.MustParseAddr("10.99.0.4")
	n5 = netip.MustParseAddr("10.99.0.5")
	n6 = netip.MustParseAddr("10.99.0.6")
	n7 = netip.MustParseAddr("10.99.0.7")
)

// cluster is a registry stand-in: which peers run, registered when.
type cluster struct {
	now  time.Time
	up   map[netip.Addr]bool
	regd map[netip.Addr]time.Time
}

func (c *cluster) state(a netip.Addr) (bool, time.Time) { return c.up[a], c.regd[a] }

// newBroker has p2 and p3 hold layer and run (they reported it, then
// registered).
func newBroker(maxUploads int) (*Broker, *cluster) {
	c := &cluster{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), up: map[netip.Addr]bool{}, regd: map[netip.Addr]time.Time{}}
	b := &Broker{MaxUploads: maxUploads, Lease: time.Minute, Now: func() time.Time { return c.now }}
	for _, p := range []netip.Addr{p2, p3} {
		b.Report(p, layer, contract.SwarmOK, 100)
		c.up[p], c.regd[p] = true, c.now.Add(time.Second)
	}
	c.now = c.now.Add(2 * time.Second)
	return b, c
}

func choose(t *testing.T, b *Broker, c *cluster, node netip.Addr) netip.Addr {
	t.Helper()
	p, ok := b.Choose(node, layer, c.state)
	if !ok {
		return netip.Addr{}
	}
	return p
}

func TestBrokerBoundsUploads(t *testing.T) {
	b, c := newBroker(1)
	// One upload each: the first two nodes go to the two peers (the lower
	// address first), the third to node1.
	if got := choose(t, b, c, n4); got != p2 {
		t.Errorf("first node sent to %v, want %v", got, p2)
	}
	if got := choose(t, b, c, n5); got != p3 {
		t.Errorf("second node sent to %v, want %v (p2 is busy)", got, p3)
	}
	if got := choose(t, b, c, n6); got.IsValid() {
		t.Errorf("third node sent to %v, want node1 (every peer busy)", got)
	}
	// A report frees the slot; the reporter becomes a peer itself, offered
	// once it registered.
	if from := b.Report(n4, layer, contract.SwarmOK, 100); from != p2 {
		t.Errorf("report credited %v, want %v", from, p2)
	}
	if got := choose(t, b, c, n6); got != p2 {
		t.Errorf("after the report: %v, want %v", got, p2)
	}
	if got := choose(t, b, c, n7); got.IsValid() {
		t.Errorf("n4 is not registered since its report, yet offered: %v", got)
	}
	c.up[n4], c.regd[n4] = true, c.now.Add(time.Second)
	if got := choose(t, b, c, n7); got != n4 {
		t.Errorf("registered n4 not offered: %v", got)
	}
	// A redirect whose report never comes holds its slot until its lease
	// runs out.
	c.now = c.now.Add(2 * time.Minute)
	if got := choose(t, b, c, n5); got != p3 {
		t.Errorf("after the leases ran out: %v, want %v (served least, lowest address)", got, p3)
	}
	s := b.Stats()
	if s.PeerBytes != 100 || s.PeerLayers != 1 || s.Redirects != 5 {
		t.Errorf("stats %+v, want 100 peer bytes, 1 layer from a peer, 5 redirects", s)
	}
}

func TestBrokerSkipsDownAndBadPeers(t *testing.T) {
	b, c := newBroker(2)
	c.up[p2] = false
	if got := choose(t, b, c, n4); got != p3 {
		t.Errorf("with p2 down: %v, want %v", got, p3)
	}
	// n4 caught p3 serving a bad copy: p3 is no longer offered, to anyone.
	if from := b.Report(n4, layer, contract.SwarmBad, 100); from != p3 {
		t.Errorf("bad report blamed %v, want %v", from, p3)
	}
	for _, n := range []netip.Addr{n4, n5} {
		if got := choose(t, b, c, n); got.IsValid() {
			t.Errorf("%v sent to %v; want node1 (p2 down, p3 bad)", n, got)
		}
	}
	// p2 back up: offered again; one that breaks a transfer off is not.
	c.up[p2] = true
	if got := choose(t, b, c, n6); got != p2 {
		t.Errorf("p2 back: %v", got)
	}
	b.Report(n6, layer, contract.SwarmFail, 0)
	if got := choose(t, b, c, n6); got.IsValid() {
		t.Errorf("after p2 broke off: %v, want node1", got)
	}
	s := b.Stats()
	if s.BadReports != 1 || s.FailReports != 1 || s.PeerBytes != 0 {
		t.Errorf("stats %+v", s)
	}
	for _, ps := range s.Peers {
		if (ps.Addr == p2.String() || ps.Addr == p3.String()) && ps.Bad == "" {
			t.Errorf("peer %s not marked bad: %+v", ps.Addr, ps)
		}
	}
	// A bad peer that boots again (it reports a verified layer) is offered
	// again.
	b.Report(p3, layer, contract.SwarmOK, 100)
	c.regd[p3] = c.now.Add(time.Second)
	if got := choose(t, b, c, n7); got != p3 {
		t.Errorf("p3 after a new boot: %v", got)
	}
}

func TestBrokerNeverSelfOrUnknownLayer(t *testing.T) {
	b, c := newBroker(2)
	if got := choose(t, b, c, p2); got != p3 {
		t.Errorf("p2 asking: %v, want p3 (never itself)", got)
	}
	if p, ok := b.Choose(n4, contract.CustomLayer, c.state); ok {
		t.Errorf("a layer nobody holds went to %v", p)
	}
	if p, ok := b.Choose(n4, layer, nil); ok {
		t.Errorf("without the registry's word, sent to %v", p)
	}
}
