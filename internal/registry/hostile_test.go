package registry

import (
	"errors"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestAPIHostileHeartbeats sends heartbeats no agent sends: bad JSON,
// bodies too big, wrong types, figures out of bounds, MACs that are bad,
// unknown or of a pruned node. Each gets its 4xx, and none changes the
// registry: no node's state, figures or last-seen time, no generation, no
// node added.
func TestAPIHostileHeartbeats(t *testing.T) {
	e := newAPIEnv(t)
	head := req("52:54:00:00:00:01", "10.99.0.1")
	head.Role = RoleHead
	if _, err := e.reg.Register(head); err != nil {
		t.Fatal(err)
	}
	// node4 joins, goes silent and is pruned before the others join.
	if _, err := e.reg.Register(req("52:54:00:00:00:04", "10.99.0.4")); err != nil {
		t.Fatal(err)
	}
	e.reg.Sweep(time.Now().Add(time.Hour))
	if gone := e.reg.Prune(); len(gone) != 1 || gone[0].Name != "node4" {
		t.Fatalf("pruned %+v, want node4", gone)
	}
	for _, mac := range []string{"52:54:00:00:00:02", "52:54:00:00:00:03"} {
		if status, out := e.post(t, PathRegister, testToken, registerBody(t, mac, "10.99.0."+mac[len(mac)-1:], nil)); status != http.StatusOK {
			t.Fatalf("register %s: %d %s", mac, status, out)
		}
	}
	if status, out := e.post(t, PathHeartbeat, testToken, HeartbeatRequest{MAC: "52:54:00:00:00:02", Stats: Stats{Load1: 0.5, MemUsedKiB: 1 << 20, UptimeSec: 60}}); status != http.StatusNoContent {
		t.Fatalf("good heartbeat: %d %s", status, out)
	}
	e.reg.Flush()
	before, gen := e.reg.Nodes(), e.reg.Generation()

	const node2 = `"mac":"52:54:00:00:00:02"`
	huge := strings.Repeat(" ", 1<<20)
	tests := []struct {
		name string
		tok  string
		body string
		want int
	}{
		{"malformed JSON", testToken, `{` + node2 + `,`, http.StatusBadRequest},
		{"truncated", testToken, `{` + node2, http.StatusBadRequest},
		{"not an object", testToken, `"52:54:00:00:00:02"`, http.StatusBadRequest},
		{"null", testToken, `null`, http.StatusBadRequest},
		{"two values", testToken, `{` + node2 + `} {` + node2 + `}`, http.StatusBadRequest},
		{"garbage after", testToken, `{` + node2 + `}xyz`, http.StatusBadRequest},
		{"binary", testToken, "\x00\xff\xfe{", http.StatusBadRequest},
		{"MAC a number", testToken, `{"mac":2}`, http.StatusBadRequest},
		{"load a string", testToken, `{` + node2 + `,"load1":"high"}`, http.StatusBadRequest},
		{"huge body, white space", testToken, huge + `{` + node2 + `}`, http.StatusRequestEntityTooLarge},
		{"huge body, a long field", testToken, `{` + node2 + `,"x":"` + strings.Repeat("A", 1<<20) + `"}`, http.StatusRequestEntityTooLarge},
		{"deep nesting", testToken, `{` + node2 + `,"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, http.StatusBadRequest},
		{"no MAC", testToken, `{"load1":1}`, http.StatusBadRequest},
		{"bad MAC", testToken, `{"mac":"52:54:00:00:00:zz"}`, http.StatusBadRequest},
		{"MAC too long", testToken, `{"mac":"52:54:00:00:00:02:03"}`, http.StatusBadRequest},
		{"unknown MAC", testToken, `{"mac":"52:54:00:00:00:09"}`, http.StatusNotFound},
		{"pruned node", testToken, `{"mac":"52:54:00:00:00:04","load1":1}`, http.StatusNotFound},
		{"negative load", testToken, `{` + node2 + `,"load1":-1}`, http.StatusBadRequest},
		{"absurd load", testToken, `{` + node2 + `,"load1":1e300}`, http.StatusBadRequest},
		{"load overflows", testToken, `{` + node2 + `,"load1":1e400}`, http.StatusBadRequest},
		{"negative memory", testToken, `{` + node2 + `,"mem_used_kib":-1}`, http.StatusBadRequest},
		{"absurd memory", testToken, `{` + node2 + `,"mem_used_kib":1152921504606846976}`, http.StatusBadRequest},
		{"memory overflows", testToken, `{` + node2 + `,"mem_used_kib":18446744073709551616}`, http.StatusBadRequest},
		{"negative uptime", testToken, `{` + node2 + `,"uptime_sec":-5}`, http.StatusBadRequest},
		{"absurd uptime", testToken, `{` + node2 + `,"uptime_sec":1000000000000000}`, http.StatusBadRequest},
		{"head's MAC with bad load", testToken, `{"mac":"52:54:00:00:00:01","load1":-1}`, http.StatusBadRequest},
		{"no token", "", `{` + node2 + `}`, http.StatusUnauthorized},
		{"wrong token", strings.Repeat("0", 64), `{"mac":"52:54:00:00:00:03"}`, http.StatusUnauthorized},
	}
	const rounds = 20
	sent, wrong := 0, 0
	for range rounds {
		for _, tc := range tests {
			status, out := e.post(t, PathHeartbeat, tc.tok, tc.body)
			sent++
			if status != tc.want {
				wrong++
				t.Errorf("%s: %d %.200s, want %d", tc.name, status, out, tc.want)
			}
		}
	}
	e.reg.Flush()
	after := e.reg.Nodes()
	changes := 0
	if len(after) != len(before) {
		changes++
		t.Errorf("hostile heartbeats changed the node list: %d nodes, before %d", len(after), len(before))
	}
	for i := range min(len(before), len(after)) {
		if !reflect.DeepEqual(before[i], after[i]) {
			changes++
			t.Errorf("hostile heartbeats changed %s:\n  before %+v\n  after  %+v", before[i].Name, before[i], after[i])
		}
	}
	if g := e.reg.Generation(); g != gen {
		changes++
		t.Errorf("generation moved from %d to %d", gen, g)
	}
	t.Logf("%d hostile heartbeats (%d kinds x %d): %d wrong answers, %d state changes", sent, len(tests), rounds, wrong, changes)
}

// TestHeartbeatFigureBounds: figures that JSON cannot carry but a caller in
// process can (NaN, infinities) are refused like the absurd ones, and the
// largest figures inside the bounds pass.
func TestHeartbeatFigureBounds(t *testing.T) {
	c := newClock()
	r, _ := open(t, t.TempDir()+"/nodes.json", c)
	if _, err := r.Register(req("52:54:00:00:00:02", "10.99.0.2")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []Stats{{Load1: math.NaN()}, {Load1: math.Inf(1)}, {Load1: math.Inf(-1)}, {Load1: -0.01},
		{MemUsedKiB: maxMemUsedKiB + 1}, {UptimeSec: -1}, {UptimeSec: maxUptimeSec + 1}} {
		if err := r.Heartbeat("52:54:00:00:00:02", s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Heartbeat(%+v) = %v, want ErrInvalid", s, err)
		}
	}
	if n := r.Nodes()[0]; n.Load1 != 0 || n.MemUsedKiB != 0 || n.UptimeSec != 0 {
		t.Errorf("refused figures were kept: %+v", n)
	}
	ok := Stats{Load1: maxLoad1, MemUsedKiB: maxMemUsedKiB, UptimeSec: maxUptimeSec}
	if err := r.Heartbeat("52:54:00:00:00:02", ok); err != nil {
		t.Fatalf("Heartbeat(%+v): %v", ok, err)
	}
	if n := r.Nodes()[0]; n.Load1 != ok.Load1 || n.MemUsedKiB != ok.MemUsedKiB || n.UptimeSec != ok.UptimeSec {
		t.Errorf("figures in bounds not kept: %+v", n)
	}
}

// TestHeartbeatWithAnotherNodesMAC: the cluster token is the only
// credential, so a holder of it can heartbeat with another node's MAC. What
// that can do is bounded: it touches only that node's figures and
// liveness. It marks no node down, changes no other node, and moves no
// generation while the node is up.
func TestHeartbeatWithAnotherNodesMAC(t *testing.T) {
	c := newClock()
	r, _ := open(t, t.TempDir()+"/nodes.json", c)
	for _, rq := range []RegisterRequest{req("52:54:00:00:00:02", "10.99.0.2"), req("52:54:00:00:00:03", "10.99.0.3"), req("52:54:00:00:00:04", "10.99.0.4")} {
		if _, err := r.Register(rq); err != nil {
			t.Fatal(err)
		}
	}
	before, gen := r.Nodes(), r.Generation()
	const sent = 100
	for i := range sent {
		c.add(time.Millisecond)
		if err := r.Heartbeat("52:54:00:00:00:03", Stats{Load1: float64(i), MemUsedKiB: 1}); err != nil {
			t.Fatal(err)
		}
		r.Sweep(c.now())
	}
	after := r.Nodes()
	for i, n := range after {
		if n.State != StateUp {
			t.Errorf("%s marked %s", n.Name, n.State)
		}
		if n.Name != "node3" && !reflect.DeepEqual(n, before[i]) {
			t.Errorf("a heartbeat with node3's MAC changed %s:\n  before %+v\n  after  %+v", n.Name, before[i], n)
		}
	}
	if after[1].Load1 != sent-1 {
		t.Errorf("node3's load %v, want the last heartbeat's %d", after[1].Load1, sent-1)
	}
	if g := r.Generation(); g != gen {
		t.Errorf("generation moved from %d to %d", gen, g)
	}
}
