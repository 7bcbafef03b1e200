package shutdown

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// never is a fakeNode delay for what does not happen.
const never = time.Duration(-1)

// fakeNode is a node of fakeCluster and what it does once told to go.
type fakeNode struct {
	name, ip string
	// down: the registry lists it as down when planning (gone already).
	down bool
	// ssh is the command's verdict, with its detail.
	ssh    pexec.Status
	detail string
	// leave, silent, off: how long after the command the node leaves the
	// registry, is marked down by it, and stops answering pings (never:
	// does not). A node that is down at planning answers no ping.
	leave, silent, off time.Duration
}

// fakeCluster is a System on a virtual clock, which only Sleep moves: the
// registry, the nodes' ssh and network, and node1 itself.
type fakeCluster struct {
	t     *testing.T
	now   time.Duration
	nodes []*fakeNode
	// failList makes Nodes fail from this call on (0: never).
	failList int
	localErr error

	lists   int                      // calls to Nodes
	told    map[string]time.Duration // when each node got the command
	argv    []string
	timeout time.Duration
	execs   int
	pinged  map[string]int // pings per address
	local   []string       // actions run on node1
	localAt time.Duration
	sleeps  int
	out     strings.Builder
	err     strings.Builder
}

func newFake(t *testing.T, nodes ...*fakeNode) *fakeCluster {
	for _, n := range nodes {
		if n.ip == "" {
			n.ip = "10.99.0." + strings.TrimPrefix(n.name, "node")
		}
	}
	return &fakeCluster{t: t, nodes: nodes, told: map[string]time.Duration{}, pinged: map[string]int{}}
}

// after reports whether d has passed since n was told to go.
func (f *fakeCluster) after(n *fakeNode, d time.Duration) bool {
	at, told := f.told[n.name]
	return told && d != never && f.now >= at+d
}

// listed reports whether the registry still lists n.
func (f *fakeCluster) listed(n *fakeNode) bool { return !f.after(n, n.leave) }

func (f *fakeCluster) system() *System {
	return &System{
		Nodes: func(context.Context) ([]registry.Node, error) {
			f.lists++
			if f.failList > 0 && f.lists >= f.failList {
				return nil, errors.New("head gone")
			}
			ns := []registry.Node{{Name: "node1", IP: "10.99.0.1", Role: registry.RoleHead, State: registry.StateUp}}
			for _, n := range f.nodes {
				if !f.listed(n) {
					continue
				}
				state := registry.StateUp
				if n.down || f.after(n, n.silent) {
					state = registry.StateDown
				}
				ns = append(ns, registry.Node{Name: n.name, IP: n.ip, Role: registry.RoleNode, State: state})
			}
			return ns, nil
		},
		Exec: func(_ context.Context, names, argv []string, timeout time.Duration) []pexec.Result {
			f.execs++
			f.argv, f.timeout = argv, timeout
			var res []pexec.Result
			for _, name := range names {
				n := f.node(name)
				if n == nil {
					f.t.Errorf("command sent to %s, which is not a node", name)
					continue
				}
				f.told[name] = f.now
				res = append(res, pexec.Result{Node: name, Status: n.ssh, Detail: n.detail})
			}
			return res
		},
		Alive: func(_ context.Context, addr string) bool {
			f.pinged[addr]++
			for _, n := range f.nodes {
				// A name resolves (through /etc/hosts) only while the
				// registry lists the node.
				if n.ip == addr || n.name == addr && f.listed(n) {
					return !n.down && !f.after(n, n.off)
				}
			}
			return false
		},
		Local: func(_ context.Context, action string) error {
			f.local = append(f.local, action)
			f.localAt = f.now
			return f.localErr
		},
		Sleep: func(ctx context.Context, d time.Duration) error {
			if d != PollEvery {
				f.t.Errorf("slept %v, want PollEvery", d)
			}
			f.sleeps++
			f.now += d
			return ctx.Err()
		},
		Out: &f.out,
		Err: &f.err,
	}
}

func (f *fakeCluster) node(name string) *fakeNode {
	for _, n := range f.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

func (f *fakeCluster) run(o Options) error {
	f.t.Helper()
	return Run(context.Background(), f.system(), o)
}

// offSince is when n was silent for good, from its command on.
func (f *fakeCluster) offSince(n *fakeNode) time.Duration { return f.told[n.name] + n.off }

// checkPingedByAddress fails when anything but an address was pinged.
func (f *fakeCluster) checkPingedByAddress() {
	f.t.Helper()
	for a := range f.pinged {
		if _, err := netip.ParseAddr(a); err != nil {
			f.t.Errorf("pinged %q, not an address", a)
		}
	}
}

var defaults = Options{Timeout: 20 * time.Second, Grace: 30 * time.Second, Settle: 3 * time.Minute}

// The whole sequence: every node is told at once; node1 goes only after
// each node is confirmed and has been off the network for GoneAfter
// polls. node3 drops its ssh connection and leaves the registry a little
// later, and goes off the network last; node4 is down already and is
// left alone.
func TestRunOrder(t *testing.T) {
	f := newFake(t,
		&fakeNode{name: "node2", ssh: pexec.OK, leave: 2 * time.Second, silent: never, off: 5 * time.Second},
		&fakeNode{name: "node3", ssh: pexec.Unreachable, detail: "ssh failed (exit 255)", leave: 3 * time.Second, silent: never, off: 40 * time.Second},
		&fakeNode{name: "node4", down: true},
		&fakeNode{name: "node5", ssh: pexec.Timeout, detail: "no answer within 20s", leave: never, silent: 7 * time.Second, off: 6 * time.Second},
	)
	if err := f.run(defaults); err != nil {
		t.Fatalf("Run: %v\nout:\n%s\nerr:\n%s", err, f.out.String(), f.err.String())
	}
	if f.execs != 1 || strings.Join(f.argv, " ") != "systemctl poweroff" || f.timeout != 20*time.Second {
		t.Errorf("%d command runs, last %q within %v", f.execs, f.argv, f.timeout)
	}
	// Every node that was up was told at once, at the start.
	for _, name := range []string{"node2", "node3", "node5"} {
		if at, ok := f.told[name]; !ok || at != 0 {
			t.Errorf("%s told at %v (%v), want at once", name, at, ok)
		}
	}
	if _, ok := f.told["node4"]; ok || f.pinged["10.99.0.4"] > 0 {
		t.Errorf("node4, down already, was told (%v) or pinged %d times", ok, f.pinged["10.99.0.4"])
	}
	// node1 strictly after every node has been silent GoneAfter polls.
	if len(f.local) != 1 || f.local[0] != "poweroff" {
		t.Fatalf("node1 got %q, want one poweroff", f.local)
	}
	for _, name := range []string{"node2", "node3", "node5"} {
		n := f.node(name)
		if f.localAt < f.offSince(n)+(GoneAfter-1)*PollEvery {
			t.Errorf("node1 powered off at %v; %s went off the network at %v", f.localAt, name, f.offSince(n))
		}
	}
	f.checkPingedByAddress()
	out := f.out.String()
	for _, w := range []string{
		"power off 3 node(s) first: node[2-3,5]\nskip node4: down already\nthen power off node1\n",
		"3 node(s) confirmed\n",
		"waiting for the nodes to go off the network (up to 3m0s)\n",
		"power off this machine (node1)\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if f.err.Len() > 0 {
		t.Errorf("warnings: %s", f.err.String())
	}
}

// Pinging a node by name, after it left the registry and so /etc/hosts,
// would find nothing and let node1 go while the node still reads its root
// from it: the fake resolves names only while listed, so this holds only
// because Run pings addresses.
func TestRunWaitsForLeftNodeByAddress(t *testing.T) {
	f := newFake(t, &fakeNode{name: "node2", ssh: pexec.OK, leave: 0, silent: never, off: 20 * time.Second})
	if err := f.run(defaults); err != nil {
		t.Fatal(err)
	}
	if f.pinged["10.99.0.2"] == 0 || f.localAt < 20*time.Second+(GoneAfter-1)*PollEvery {
		t.Errorf("node1 went at %v, pinged %v", f.localAt, f.pinged)
	}
	f.checkPingedByAddress()
}

// A node that never confirms keeps node1 up, unless forced.
func TestRunUnconfirmed(t *testing.T) {
	nodes := func() []*fakeNode {
		return []*fakeNode{
			{name: "node2", ssh: pexec.OK, leave: 1 * time.Second, silent: never, off: 2 * time.Second},
			{name: "node3", ssh: pexec.Unreachable, detail: "ssh failed (exit 255)", leave: never, silent: never, off: never},
		}
	}
	f := newFake(t, nodes()...)
	err := f.run(defaults)
	var kept *HeadKeptError
	if !errors.As(err, &kept) || !slices.Equal(kept.Nodes, []string{"node3"}) {
		t.Fatalf("Run = %v, want a HeadKeptError for node3", err)
	}
	for _, w := range []string{"1 of 2 nodes did not confirm", "node3: ssh failed (exit 255), and still listed as up after the grace period",
		"node1 stays up; shut those down by hand, or run again with --force"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	if strings.Contains(err.Error(), "node2") {
		t.Errorf("error names node2, which confirmed:\n%v", err)
	}
	if len(f.local) != 0 {
		t.Errorf("node1 got %q with node3 unconfirmed", f.local)
	}
	// Grace: 30 looks at the registry, a poll apart; then it gave up
	// without waiting for the network.
	if f.lists != 1+30 || f.sleeps != 29 || len(f.pinged) != 0 {
		t.Errorf("%d lists, %d sleeps, pings %v; want 31, 29 and none", f.lists, f.sleeps, f.pinged)
	}

	// --force: node1 goes anyway, after the settle time, saying why.
	f = newFake(t, nodes()...)
	o := defaults
	o.Force, o.Settle = true, 10*time.Second
	if err := f.run(o); err != nil {
		t.Fatalf("Run with Force: %v", err)
	}
	if len(f.local) != 1 || f.pinged["10.99.0.3"] != 10 {
		t.Errorf("with Force: node1 got %q; node3 pinged %d times, want 10", f.local, f.pinged["10.99.0.3"])
	}
	for _, w := range []string{"node3: ssh failed (exit 255)", "still answering after 10s: node3"} {
		if !strings.Contains(f.err.String(), w) {
			t.Errorf("warnings lack %q:\n%s", w, f.err.String())
		}
	}
	if !strings.Contains(f.out.String(), "1 node(s) confirmed") {
		t.Errorf("output:\n%s", f.out.String())
	}
}

// A node that refuses the command (systemctl failed) is still up: it is
// not confirmed, and the registry is not asked about it.
func TestRunRefused(t *testing.T) {
	f := newFake(t, &fakeNode{name: "node2", ssh: pexec.Failed, detail: "exit 1", leave: never, silent: never, off: never})
	err := f.run(defaults)
	var kept *HeadKeptError
	if !errors.As(err, &kept) || !strings.Contains(err.Error(), "node2: exit 1") || len(f.local) != 0 || f.lists != 1 {
		t.Errorf("Run = %v; node1 got %q; %d lists", err, f.local, f.lists)
	}
}

// A node that confirmed but still answers on the network after the settle
// time keeps node1 up, unless forced.
func TestRunStillAnswering(t *testing.T) {
	node := func() *fakeNode {
		return &fakeNode{name: "node2", ssh: pexec.OK, leave: time.Second, silent: never, off: never}
	}
	o := defaults
	o.Settle = 15 * time.Second
	f := newFake(t, node())
	err := f.run(o)
	var kept *HeadKeptError
	if !errors.As(err, &kept) || !slices.Equal(kept.Nodes, []string{"node2"}) ||
		err.Error() != "still answering after 15s: node2\nnode1 stays up; run again with --force to power it off anyway" {
		t.Fatalf("Run = %v", err)
	}
	if len(f.local) != 0 || f.pinged["10.99.0.2"] != 15 {
		t.Errorf("node1 got %q; node2 pinged %d times, want 15", f.local, f.pinged["10.99.0.2"])
	}

	f = newFake(t, node())
	o.Force = true
	if err := f.run(o); err != nil || len(f.local) != 1 || f.err.String() != "still answering after 15s: node2\n" {
		t.Errorf("with Force: %v; node1 got %q; warnings %q", err, f.local, f.err.String())
	}
}

// A node that misses one ping on its way down is not gone yet.
func TestRunOneMissedPing(t *testing.T) {
	f := newFake(t, &fakeNode{name: "node2", ssh: pexec.OK, leave: 0, silent: never, off: 10 * time.Second})
	sys := f.system()
	alive := sys.Alive
	sys.Alive = func(ctx context.Context, addr string) bool {
		if f.now == 2*time.Second {
			f.pinged[addr]++
			return false // busy, at the third poll
		}
		return alive(ctx, addr)
	}
	if err := Run(context.Background(), sys, defaults); err != nil {
		t.Fatal(err)
	}
	if f.localAt < 10*time.Second+(GoneAfter-1)*PollEvery {
		t.Errorf("node1 went at %v: one missed ping counted node2 gone", f.localAt)
	}
}

// A node that is gone before the shutdown reaches it: its ssh fails, and
// the head has marked it down; it confirms at the first look, and answers
// no ping.
func TestRunAlreadyGone(t *testing.T) {
	f := newFake(t,
		&fakeNode{name: "node2", ssh: pexec.Unreachable, detail: "ssh: connect to host node2 port 22: No route to host", leave: never, silent: 0, off: 0},
		&fakeNode{name: "node3", down: true},
	)
	if err := f.run(defaults); err != nil {
		t.Fatal(err)
	}
	if f.lists != 2 || len(f.local) != 1 || f.pinged["10.99.0.2"] != GoneAfter || f.pinged["10.99.0.3"] != 0 {
		t.Errorf("%d lists; node1 got %q; pings %v", f.lists, f.local, f.pinged)
	}
	if !strings.Contains(f.out.String(), "skip node3: down already") || !strings.Contains(f.out.String(), "1 node(s) confirmed") {
		t.Errorf("output:\n%s", f.out.String())
	}
}

// --dry-run says what it would do and does nothing.
func TestRunDryRun(t *testing.T) {
	f := newFake(t, &fakeNode{name: "node2", ssh: pexec.OK, leave: 0, silent: never, off: 0})
	o := defaults
	o.DryRun = true
	if err := f.run(o); err != nil {
		t.Fatal(err)
	}
	if f.execs != 0 || len(f.local) != 0 || len(f.pinged) != 0 || f.sleeps != 0 || f.lists != 1 {
		t.Errorf("dry run: %d command runs, node1 got %q, pings %v, %d sleeps, %d lists", f.execs, f.local, f.pinged, f.sleeps, f.lists)
	}
	if got, want := f.out.String(), "power off 1 node(s) first: node2\nthen power off node1\n"; got != want {
		t.Errorf("dry run said %q, want %q", got, want)
	}
}

func TestRunReboot(t *testing.T) {
	f := newFake(t, &fakeNode{name: "node2", ssh: pexec.OK, leave: 0, silent: never, off: time.Second})
	o := defaults
	o.Reboot = true
	if err := f.run(o); err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.argv, " ") != "systemctl reboot" || !slices.Equal(f.local, []string{"reboot"}) {
		t.Errorf("nodes got %q, node1 %q", f.argv, f.local)
	}
	for _, w := range []string{"reboot 1 node(s) first: node2", "then reboot node1", "reboot this machine (node1)"} {
		if !strings.Contains(f.out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, f.out.String())
		}
	}
}

// A permanent node1 (localnode1) shuts its nodes down and stays on, unless
// it is included.
func TestRunKeepHead(t *testing.T) {
	for _, include := range []bool{false, true} {
		t.Run(fmt.Sprintf("include %v", include), func(t *testing.T) {
			f := newFake(t, &fakeNode{name: "node2", ssh: pexec.OK, leave: 0, silent: never, off: 0})
			o := defaults
			o.PermanentHead, o.IncludeHead = true, include
			if err := f.run(o); err != nil {
				t.Fatal(err)
			}
			if _, told := f.told["node2"]; !told {
				t.Error("node2 was not told")
			}
			if include != (len(f.local) == 1) {
				t.Errorf("node1 got %q", f.local)
			}
			stays := strings.Contains(f.out.String(), "node1 stays on: it is a permanent node1")
			if stays == include || strings.Contains(f.out.String(), "then leave node1 on") == include {
				t.Errorf("output:\n%s", f.out.String())
			}
		})
	}
}

// With no other node up, node1 goes at once.
func TestRunHeadOnly(t *testing.T) {
	f := newFake(t)
	if err := f.run(defaults); err != nil {
		t.Fatal(err)
	}
	if f.execs != 0 || len(f.pinged) != 0 || f.sleeps != 0 || len(f.local) != 1 {
		t.Errorf("%d command runs, pings %v, %d sleeps; node1 got %q", f.execs, f.pinged, f.sleeps, f.local)
	}
	if !strings.HasPrefix(f.out.String(), "no other node is up\n") {
		t.Errorf("output:\n%s", f.out.String())
	}
}

func TestRunErrors(t *testing.T) {
	// No node list: nothing is done.
	f := newFake(t, &fakeNode{name: "node2", ssh: pexec.OK, leave: 0, silent: never, off: 0})
	f.failList = 1
	if err := f.run(defaults); err == nil || err.Error() != "head gone" || f.execs != 0 || len(f.local) != 0 {
		t.Errorf("Run without a node list: %v; %d command runs, node1 got %q", err, f.execs, f.local)
	}
	// The registry failing while confirming is a look that did not
	// answer: node3 cannot be confirmed, and node1 stays.
	f = newFake(t, &fakeNode{name: "node3", ssh: pexec.Unreachable, detail: "ssh failed (exit 255)", leave: 0, silent: never, off: 0})
	f.failList = 2
	var kept *HeadKeptError
	if err := f.run(defaults); !errors.As(err, &kept) || len(f.local) != 0 {
		t.Errorf("Run with the head gone after planning: %v; node1 got %q", err, f.local)
	}
	// node1's own systemctl failing is Run's error.
	f = newFake(t)
	f.localErr = errors.New("systemctl poweroff: exit status 1: Access denied")
	if err := f.run(defaults); !errors.Is(err, f.localErr) {
		t.Errorf("Run = %v, want node1's error", err)
	}
}

// Cancelled while waiting for a node to confirm: node1 stays up, and the
// answer says node2 may be going down.
func TestRunCancelled(t *testing.T) {
	f := newFake(t, &fakeNode{name: "node2", ssh: pexec.Unreachable, detail: "ssh failed (exit 255)", leave: never, silent: never, off: never})
	ctx, cancel := context.WithCancel(context.Background())
	sys := f.system()
	sleep := sys.Sleep
	sys.Sleep = func(ctx context.Context, d time.Duration) error {
		cancel()
		return sleep(ctx, d)
	}
	err := Run(ctx, sys, defaults)
	var ie *InterruptedError
	if !errors.As(err, &ie) || !errors.Is(err, context.Canceled) || len(f.local) != 0 || f.sleeps != 1 {
		t.Fatalf("Run cancelled: %v; node1 got %q after %d sleeps", err, f.local, f.sleeps)
	}
	if ie.Phase != "confirming the nodes" || !slices.Equal(ie.Unsure, []string{"node2"}) || len(ie.Off)+len(ie.Up) != 0 {
		t.Errorf("Run cancelled while confirming: %+v", ie)
	}
}
