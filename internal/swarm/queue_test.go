package swarm

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// The queue of Broker.Route, on a fake clock: a request's wait bound fires
// when the test sends on the timer channel it was given, and the timer's
// creation says the request is queued. No assertion depends on time.

// timers hands the test each queued request's wait-bound timer.
type timers chan chan time.Time

func (ts timers) after(time.Duration) (<-chan time.Time, func()) {
	ch := make(chan time.Time, 1)
	ts <- ch
	return ch, func() {}
}

// newQueue is newBroker's cluster (p2 and p3 hold layer and run when
// peers is set; nobody holds anything else) with node1 capped at node1
// uploads and the fake timers.
func newQueue(maxUploads, node1 int, peers bool) (*Broker, *cluster, timers) {
	var b *Broker
	var c *cluster
	if peers {
		b, c = newBroker(maxUploads)
	} else {
		c = &cluster{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), up: map[netip.Addr]bool{}, regd: map[netip.Addr]time.Time{}}
		b = &Broker{MaxUploads: maxUploads, Lease: time.Minute, Now: func() time.Time { return c.now }}
	}
	ts := make(timers, 16)
	b.Node1Uploads, b.State, b.After = node1, c.state, ts.after
	return b, c, ts
}

type result struct {
	r   Route
	err error
}

// route starts node's request for l; its route comes on the channel.
func route(ctx context.Context, b *Broker, node netip.Addr, l string) <-chan result {
	done := make(chan result, 1)
	go func() {
		r, err := b.Route(ctx, node, l)
		done <- result{r, err}
	}()
	return done
}

// routed starts node's request and wants it routed at once.
func routed(t *testing.T, b *Broker, ts timers, node netip.Addr, l string) Route {
	t.Helper()
	done := route(context.Background(), b, node, l)
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("%v: %v", node, res.err)
		}
		if res.r.Waited != 0 {
			t.Errorf("%v routed at once, yet waited %v", node, res.r.Waited)
		}
		return res.r
	case <-ts:
		t.Fatalf("%v queued; want it routed at once", node)
	}
	return Route{}
}

// queued starts node's request and wants it to wait; it returns the
// request's wait-bound timer and its result channel.
func queued(t *testing.T, ctx context.Context, b *Broker, ts timers, node netip.Addr, l string) (chan time.Time, <-chan result) {
	t.Helper()
	done := route(ctx, b, node, l)
	select {
	case res := <-done:
		t.Fatalf("%v routed at once (%+v, %v); want it queued", node, res.r, res.err)
	case tm := <-ts:
		return tm, done
	}
	return nil, nil
}

func wantPeer(t *testing.T, what string, r Route, want netip.Addr) {
	t.Helper()
	if r.Peer != want {
		t.Errorf("%s: sent to %v, want %v", what, r.Peer, want)
	}
}

func wantNode1(t *testing.T, what string, r Route) {
	t.Helper()
	if r.Peer.IsValid() {
		t.Errorf("%s: sent to %v, want node1", what, r.Peer)
	}
}

func wantStats(t *testing.T, b *Broker, node1, queue int) {
	t.Helper()
	if s := b.Stats(); s.Node1Uploads != node1 || s.Queued != queue {
		t.Errorf("node1 uploads %d, queued %d; want %d, %d", s.Node1Uploads, s.Queued, node1, queue)
	}
}

func TestRouteBoundsNode1Uploads(t *testing.T) {
	b, c, ts := newQueue(2, 2, false)
	// Nobody holds the layer: node1 serves the first two, the third waits.
	r4 := routed(t, b, ts, n4, layer)
	r5 := routed(t, b, ts, n5, layer)
	wantNode1(t, "n4", r4)
	wantNode1(t, "n5", r5)
	_, w6 := queued(t, context.Background(), b, ts, n6, layer)
	wantStats(t, b, 2, 1)
	// n5's transfer breaks off before any report: nobody can give the
	// layer, so n6 takes node1's freed slot.
	c.now = c.now.Add(10 * time.Second)
	r5.Done(false)
	r5.Done(true) // again: no effect
	res := <-w6
	wantNode1(t, "n6 after n5's transfer ended", res.r)
	if res.r.Waited != 10*time.Second || res.r.Overflow {
		t.Errorf("n6: waited %v, overflow %v; want 10s within the cap", res.r.Waited, res.r.Overflow)
	}
	wantStats(t, b, 2, 0)
	// node1 sent n4 the whole layer: n4 is about to report it, so node1
	// sends no more copies, even with a free slot; n7 waits, through n4's
	// report (it is booting and about to serve), for n4 to register, and
	// is sent to it.
	r4.Done(true)
	_, w7 := queued(t, context.Background(), b, ts, n7, layer)
	wantStats(t, b, 1, 1)
	b.Report(n4, layer, contract.SwarmOK, 100)
	wantStats(t, b, 1, 1)
	c.up[n4], c.regd[n4] = true, c.now.Add(time.Second)
	b.Wake()
	wantPeer(t, "n7 once n4 registered", (<-w7).r, n4)
	if s := b.Stats(); s.Waits != 2 || s.Overflows != 0 || s.Node1Uploads != 1 {
		t.Errorf("stats %+v; want 2 waits, no overflow, n6's node1 upload", s)
	}
}

func TestRouteWaiterGetsFreedPeer(t *testing.T) {
	b, _, ts := newQueue(1, 2, true)
	wantPeer(t, "n4", routed(t, b, ts, n4, layer), p2)
	wantPeer(t, "n5", routed(t, b, ts, n5, layer), p3)
	// Both peers busy; they hold the layer, so node1's free slots are
	// not for it: n6 waits, and gets p2 as soon as n4's report frees it.
	_, w6 := queued(t, context.Background(), b, ts, n6, layer)
	wantStats(t, b, 0, 1)
	b.Report(n4, layer, contract.SwarmOK, 100)
	wantPeer(t, "n6 after n4's report", (<-w6).r, p2)
	wantStats(t, b, 0, 0)
}

func TestRouteQueueIsFIFO(t *testing.T) {
	b, _, ts := newQueue(1, 2, true)
	routed(t, b, ts, n4, layer)
	routed(t, b, ts, n5, layer)
	_, w6 := queued(t, context.Background(), b, ts, n6, layer)
	_, w7 := queued(t, context.Background(), b, ts, n7, layer)
	// One slot frees: the older request takes it, the newer one waits on.
	b.Report(n5, layer, contract.SwarmOK, 100)
	wantPeer(t, "n6, first in the queue", (<-w6).r, p3)
	wantStats(t, b, 0, 1)
	// A newcomer does not pass n7 either.
	n8 := netip.MustParseAddr("10.99.0.8")
	_, w8 := queued(t, context.Background(), b, ts, n8, layer)
	b.Report(n4, layer, contract.SwarmOK, 100)
	wantPeer(t, "n7, before n8", (<-w7).r, p2)
	wantStats(t, b, 0, 1)
	b.Report(n6, layer, contract.SwarmOK, 100)
	wantPeer(t, "n8", (<-w8).r, p3)

	// A slot goes to the oldest request it can serve: one for a layer
	// nobody holds takes node1's slot past an older one that waits for
	// a peer.
	b2, _, ts2 := newQueue(1, 1, true)
	routed(t, b2, ts2, n4, layer)
	routed(t, b2, ts2, n5, layer)
	_, w6b := queued(t, context.Background(), b2, ts2, n6, layer)
	wantNode1(t, "n7's custom layer", routed(t, b2, ts2, n7, contract.CustomLayer))
	wantStats(t, b2, 1, 1)
	b2.Report(n4, layer, contract.SwarmOK, 100)
	wantPeer(t, "n6", (<-w6b).r, p2)
}

func TestRouteWaitBoundFallsBackToNode1(t *testing.T) {
	b, c, ts := newQueue(1, 1, true)
	routed(t, b, ts, n4, layer)
	routed(t, b, ts, n5, layer)
	tm, w6 := queued(t, context.Background(), b, ts, n6, layer)
	c.now = c.now.Add(DefaultMaxWait)
	tm <- c.now
	res := <-w6
	wantNode1(t, "n6 after its wait bound", res.r)
	if !res.r.Overflow || res.r.Waited != DefaultMaxWait {
		t.Errorf("n6: overflow %v, waited %v; want past the cap after %v", res.r.Overflow, res.r.Waited, DefaultMaxWait)
	}
	wantStats(t, b, 1, 0)
	res.r.Done(true)
	if s := b.Stats(); s.Overflows != 1 || s.Node1Uploads != 0 {
		t.Errorf("stats %+v; want 1 overflow, no node1 upload left", s)
	}
}

func TestRouteCancelledWaiterHoldsNothing(t *testing.T) {
	// Waiting for a peer: the cancelled request leaves the queue, and the
	// slot n4's report frees goes to the next request.
	b, _, ts := newQueue(1, 2, true)
	routed(t, b, ts, n4, layer)
	routed(t, b, ts, n5, layer)
	ctx, cancel := context.WithCancel(context.Background())
	_, w6 := queued(t, ctx, b, ts, n6, layer)
	cancel()
	if res := <-w6; !errors.Is(res.err, context.Canceled) || res.r.Peer.IsValid() {
		t.Errorf("cancelled n6: %+v, %v; want nothing and context.Canceled", res.r, res.err)
	}
	wantStats(t, b, 0, 0)
	b.Report(n4, layer, contract.SwarmOK, 100)
	wantPeer(t, "n7 after n6 left", routed(t, b, ts, n7, layer), p2)
	if s := b.Stats(); s.Redirects != 3 {
		t.Errorf("%d redirects; want 3 (n4, n5, n7)", s.Redirects)
	}

	// Waiting for node1: node1's slots stay bounded by the transfers
	// that run.
	b2, _, ts2 := newQueue(1, 1, false)
	r4 := routed(t, b2, ts2, n4, layer)
	ctx2, cancel2 := context.WithCancel(context.Background())
	_, w5 := queued(t, ctx2, b2, ts2, n5, layer)
	cancel2()
	<-w5
	wantStats(t, b2, 1, 0)
	r4.Done(false) // broke off: n4 is no source
	wantStats(t, b2, 0, 0)
	wantNode1(t, "n6", routed(t, b2, ts2, n6, layer))
	wantStats(t, b2, 1, 0)
}

func TestDirectCountsNode1Uploads(t *testing.T) {
	b, _, ts := newQueue(1, 1, false)
	d := b.Direct(n5, layer)
	if !d.Overflow || d.Peer.IsValid() {
		t.Errorf("direct: %+v; want node1 past its cap", d)
	}
	_, w4 := queued(t, context.Background(), b, ts, n4, layer)
	d.Done(false)
	wantNode1(t, "n4 after the direct transfer", (<-w4).r)
}

func TestRouteNode1ServesWhenHoldersLeft(t *testing.T) {
	b, c, ts := newQueue(1, 1, true)
	// The registry changed: p2 and p3 are seen registered, then they
	// leave (gone from the registry): they are not about to serve, so
	// node1 serves n4 at once.
	b.Wake()
	for _, p := range []netip.Addr{p2, p3} {
		delete(c.up, p)
		delete(c.regd, p)
	}
	b.Wake()
	wantNode1(t, "n4 with every holder gone", routed(t, b, ts, n4, layer))
	// A holder that reported and has not registered yet is awaited.
	b2, _, ts2 := newQueue(1, 1, false)
	b2.Report(n5, layer, contract.SwarmOK, 100)
	ctx, cancel := context.WithCancel(context.Background())
	_, w6 := queued(t, ctx, b2, ts2, n6, layer)
	wantStats(t, b2, 0, 1)
	cancel()
	<-w6
}

func TestRouteSourceWithoutReportLapses(t *testing.T) {
	b, c, ts := newQueue(1, 1, false)
	r4 := routed(t, b, ts, n4, layer)
	r4.Done(true)
	// n4 got the whole layer from node1: n5 waits for it to report.
	_, w5 := queued(t, context.Background(), b, ts, n5, layer)
	// n4's report never comes; a lease later it is no source, and the next
	// look at the queue (n6's request) sends n5, first in line, to node1.
	c.now = c.now.Add(2 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	_, w6 := queued(t, ctx, b, ts, n6, layer)
	wantNode1(t, "n5 once n4 lapsed", (<-w5).r)
	wantStats(t, b, 1, 1)
	cancel()
	<-w6
}
