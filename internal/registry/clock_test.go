package registry

import (
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// jumpClock is a head whose wall clock can be set (stepped forward or back,
// as NTP or an operator does) while its monotonic clock only runs.
type jumpClock struct {
	wall time.Time
	mono time.Duration
}

func (c *jumpClock) now() time.Time         { return c.wall }
func (c *jumpClock) elapsed() time.Duration { return c.mono }

// run lets d pass: both clocks move.
func (c *jumpClock) run(d time.Duration) { c.wall = c.wall.Add(d); c.mono += d }

// step sets the wall clock by d; no time passes.
func (c *jumpClock) step(d time.Duration) { c.wall = c.wall.Add(d) }

func openJump(t *testing.T, path string, c *jumpClock) *Registry {
	t.Helper()
	r, err := Open(path, testNaming, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.SetClocks(c.now, c.elapsed)
	r.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { r.Flush() })
	return r
}

func states(r *Registry) map[string]string {
	m := map[string]string{}
	for _, n := range r.Nodes() {
		m[n.Name] = n.State
	}
	return m
}

// TestClockStepsDecideNothing: node1's wall clock jumps a year forward and
// a year back while node2 heartbeats and node3 has gone silent. node2 is
// never marked down, and node3 goes down once MissedHeartbeats intervals
// have passed on the monotonic clock, not sooner and not never.
func TestClockStepsDecideNothing(t *testing.T) {
	const year = 365 * 24 * time.Hour
	for _, tc := range []struct {
		name  string
		steps []time.Duration // wall steps, one before each interval
	}{
		{"forward", []time.Duration{year, 0, 0, 0, 0}},
		{"back", []time.Duration{-year, 0, 0, 0, 0}},
		{"back and forth", []time.Duration{-year, 2 * year, -year, -time.Hour, time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &jumpClock{wall: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			r := openJump(t, filepath.Join(t.TempDir(), "nodes.json"), c)
			for _, rq := range []RegisterRequest{req("52:54:00:00:00:02", "10.99.0.2"), req("52:54:00:00:00:03", "10.99.0.3")} {
				if _, err := r.Register(rq); err != nil {
					t.Fatal(err)
				}
			}
			iv := r.Interval()
			wrongDown := 0
			var node3Down time.Duration
			for i, st := range tc.steps {
				c.step(st)
				c.run(iv)
				if err := r.Heartbeat("52:54:00:00:00:02", Stats{Load1: 0.5}); err != nil {
					t.Fatal(err)
				}
				r.Sweep(c.now())
				s := states(r)
				if s["node2"] != StateUp {
					wrongDown++
				}
				if s["node3"] == StateDown && node3Down == 0 {
					node3Down = c.mono
				}
				// node3 is silent since mono 0: down exactly when more
				// than MissedHeartbeats intervals have passed.
				wantDown := time.Duration(i+1)*iv > MissedHeartbeats*iv
				if (s["node3"] == StateDown) != wantDown {
					t.Errorf("after %d intervals (wall %v): node3 is %s, want down=%v", i+1, c.wall, s["node3"], wantDown)
				}
			}
			if wrongDown != 0 {
				t.Errorf("node2 heartbeating every interval was marked down %d times", wrongDown)
			}
			if node3Down != (MissedHeartbeats+1)*iv {
				t.Errorf("silent node3 went down at %v of monotonic time, want %v", node3Down, (MissedHeartbeats+1)*iv)
			}
		})
	}
}

// TestRestartAfterClockStepBack: a head restarted with a clock set a year
// back finds LastSeen times a year in its future in the registry file. The
// nodes get MissedHeartbeats intervals from the restart, like any restart,
// and the ones that stay silent go down then, not a year later.
func TestRestartAfterClockStepBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodes.json")
	c := &jumpClock{wall: time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)}
	r := openJump(t, path, c)
	for _, rq := range []RegisterRequest{req("52:54:00:00:00:02", "10.99.0.2"), req("52:54:00:00:00:03", "10.99.0.3")} {
		if _, err := r.Register(rq); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}

	// The restarted head: a new process (monotonic from 0), its clock a year
	// back.
	c2 := &jumpClock{wall: c.wall.Add(-365 * 24 * time.Hour)}
	r2 := openJump(t, path, c2)
	iv := r2.Interval()
	for i := 1; i <= MissedHeartbeats+1; i++ {
		c2.run(iv)
		if err := r2.Heartbeat("52:54:00:00:00:02", Stats{}); err != nil {
			t.Fatal(err)
		}
		r2.Sweep(c2.now())
		s := states(r2)
		if s["node2"] != StateUp {
			t.Errorf("after %d intervals: heartbeating node2 is %s", i, s["node2"])
		}
		if want := i > MissedHeartbeats; (s["node3"] == StateDown) != want {
			t.Errorf("after %d intervals: silent node3 is %s, want down=%v", i, s["node3"], want)
		}
	}
	if got := states(r2); !slices.Equal([]string{got["node2"], got["node3"]}, []string{StateUp, StateDown}) {
		t.Errorf("end states %v", got)
	}
}

// TestRealClockSweep: with the real clock, a Sweep an hour ahead (a now
// from time.Now, which carries the monotonic reading) marks silent nodes
// down, and a Sweep at the present does not.
func TestRealClockSweep(t *testing.T) {
	r, err := Open(filepath.Join(t.TempDir(), "nodes.json"), testNaming, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Flush() })
	if _, err := r.Register(req("52:54:00:00:00:02", "10.99.0.2")); err != nil {
		t.Fatal(err)
	}
	r.Sweep(time.Now())
	if s := states(r)["node2"]; s != StateUp {
		t.Fatalf("just registered, swept at the present: %s", s)
	}
	r.Sweep(time.Now().Add(time.Hour))
	if s := states(r)["node2"]; s != StateDown {
		t.Fatalf("swept an hour ahead: %s, want down", s)
	}
}
