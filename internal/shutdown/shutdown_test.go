package shutdown

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

func node(name, role, state string) registry.Node {
	return registry.Node{Name: name, Role: role, State: state, IP: "10.99.0." + strings.TrimPrefix(name, "node")}
}

func TestMakePlan(t *testing.T) {
	p := MakePlan([]registry.Node{
		node("node1", registry.RoleHead, registry.StateUp),
		node("node2", registry.RoleNode, registry.StateUp),
		node("node3", registry.RoleNode, registry.StateDown),
		// Joining: its sshd is about to answer, and it runs from node1.
		node("node4", registry.RoleNode, registry.StateJoining),
	})
	if p.Head != "node1" || strings.Join(p.Nodes, ",") != "node2,node4" || strings.Join(p.Down, ",") != "node3" {
		t.Fatalf("plan %+v", p)
	}
	// Asked by address later: a leaving node drops out of /etc/hosts.
	if a := p.Addr("node4"); a != p.Addrs["node4"] || a == "" || a == "node4" {
		t.Errorf("Addr(node4) = %q; Addrs %v", a, p.Addrs)
	}
	if a := p.Addr("node9"); a != "node9" {
		t.Errorf("Addr of an unknown node = %q, want its name", a)
	}
	want := "power off 2 node(s) first: node[2,4]\nskip node3: down already\nthen power off node1\n"
	if got := p.Describe("power off"); got != want {
		t.Errorf("Describe:\n%s\nwant:\n%s", got, want)
	}
	if got := (Plan{}).Describe("reboot"); !strings.Contains(got, "no other node is up") || !strings.Contains(got, "then reboot this machine") {
		t.Errorf("empty plan: %q", got)
	}
}

func TestConfirm(t *testing.T) {
	results := []pexec.Result{
		{Node: "node2", Status: pexec.OK},
		{Node: "node3", Status: pexec.Unreachable, Detail: "ssh failed (exit 255)"}, // leaves at the 2nd poll
		{Node: "node4", Status: pexec.Unreachable, Detail: "ssh failed (exit 255)"}, // never leaves
		{Node: "node5", Status: pexec.Failed, Detail: "exit 1"},
		{Node: "node6", Status: pexec.Timeout, Detail: "no answer within 20s"}, // goes down at the 3rd
		{Node: "node7", Status: pexec.Down, Detail: "down"},
	}
	lists := [][]registry.Node{
		{node("node3", "node", "up"), node("node4", "node", "up"), node("node6", "node", "up")},
		{node("node4", "node", "up"), node("node6", "node", "up")},
		{node("node4", "node", "up"), node("node6", "node", "down")},
	}
	polls, waits := 0, 0
	c := Confirmer{
		Nodes: func(context.Context) ([]registry.Node, error) {
			if polls == 1 {
				polls++
				return nil, errors.New("head busy") // one failed poll is skipped
			}
			l := lists[min(polls, len(lists)-1)]
			polls++
			return l, nil
		},
		Polls: 5,
		Wait:  func(context.Context) error { waits++; return nil },
	}
	vs := c.Confirm(context.Background(), results)
	want := map[string]bool{"node2": true, "node3": true, "node4": false, "node5": false, "node6": true, "node7": false}
	for _, v := range vs {
		if v.Confirmed != want[v.Node] {
			t.Errorf("%s: confirmed %v (%s), want %v", v.Node, v.Confirmed, v.How, want[v.Node])
		}
	}
	if polls != 5 || waits != 4 {
		t.Errorf("%d polls, %d waits; want 5 and 4 (node4 never leaves)", polls, waits)
	}
	rep := Report(vs)
	for _, w := range []string{"3 of 6 nodes did not confirm", "node4: ssh failed (exit 255), and still listed as up", "node5: exit 1", "node7: down"} {
		if !strings.Contains(rep, w) {
			t.Errorf("report lacks %q:\n%s", w, rep)
		}
	}
	if strings.Contains(rep, "node3") || strings.Contains(rep, "node6") {
		t.Errorf("report names confirmed nodes:\n%s", rep)
	}
}

func TestConfirmStopsPollingWhenAllLeft(t *testing.T) {
	polls := 0
	c := Confirmer{
		Nodes: func(context.Context) ([]registry.Node, error) { polls++; return nil, nil },
		Polls: 10,
		Wait:  func(context.Context) error { return nil },
	}
	vs := c.Confirm(context.Background(), []pexec.Result{{Node: "node2", Status: pexec.Unreachable}})
	if !vs[0].Confirmed || polls != 1 {
		t.Errorf("confirmed %v after %d polls", vs[0].Confirmed, polls)
	}
	if Report(vs) != "" {
		t.Errorf("report: %q", Report(vs))
	}
	// Nothing pending: the registry is not asked at all.
	polls = 0
	c.Confirm(context.Background(), []pexec.Result{{Node: "node2", Status: pexec.OK}})
	if polls != 0 {
		t.Errorf("%d polls with nothing pending", polls)
	}
}

func TestWaitGone(t *testing.T) {
	// node2 goes away after 2 polls, node3 after 4; node5 misses one poll
	// while busy, then answers again until poll 8; node9 never goes.
	calls := map[string]int{}
	alive := func(_ context.Context, n string) bool {
		calls[n]++
		switch n {
		case "node2":
			return calls[n] <= 2
		case "node3":
			return calls[n] <= 4
		case "node5":
			return calls[n] != 2 && calls[n] <= 8
		}
		return true
	}
	noWait := func(context.Context) error { return nil }
	if left := WaitGone(context.Background(), []string{"node2", "node3", "node5"}, 30, noWait, alive); len(left) != 0 {
		t.Errorf("still alive: %v", left)
	}
	if calls["node3"] != 4+GoneAfter {
		t.Errorf("node3 asked %d times, want %d (silent %d times in a row)", calls["node3"], 4+GoneAfter, GoneAfter)
	}
	if calls["node5"] != 8+GoneAfter {
		t.Errorf("node5 asked %d times, want %d: one missed answer must not count it gone", calls["node5"], 8+GoneAfter)
	}
	calls = map[string]int{}
	left := WaitGone(context.Background(), []string{"node2", "node9"}, 10, noWait, alive)
	if len(left) != 1 || left[0] != "node9" {
		t.Errorf("after 10 polls: %v, want [node9]", left)
	}
}
