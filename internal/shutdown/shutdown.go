// Package shutdown powers a cluster off (or reboots it) in the one safe
// order: every node first, node1 last. Nodes run from node1's root over
// NFS, so a node still running when node1 goes away hangs on its next file
// access instead of shutting down cleanly.
//
// A node told `systemctl poweroff` over ssh often drops the connection
// before ssh sees the command's exit status, so ssh's exit 255 is
// ambiguous: the node may be going down, or may never have been reached.
// Such nodes count as confirmed only when the head's registry shows them
// leaving (the agent's clean-shutdown message) or going silent within a
// grace period.
//
// Run is the whole sequence, with every effect (ssh, the registry, ping,
// this machine's systemctl, the clock) behind System; `clusterdebian
// shutdown` maps its flags to Options.
package shutdown

import (
	"context"
	"fmt"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/hostlist"
	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// Plan is who gets shut down.
type Plan struct {
	// Nodes are the nodes that are up or joining, except the head: they
	// go first.
	Nodes []string
	// Down are nodes the registry lists as down: nobody to tell.
	Down []string
	// Head is node1's name ("" if the registry does not list it): last.
	Head string
	// KeepHead leaves node1 on: a permanent node1 (localnode1) is a
	// machine that has other work, and goes off only when asked.
	KeepHead bool
	// Addrs maps the nodes' names to their addresses, as the registry had
	// them when planning. A node that leaves on its way down drops out of
	// the registry and so out of /etc/hosts, while it still reads its root
	// from node1: whether it is off the network must be asked by address.
	Addrs map[string]string
}

// Addr returns the address of the node name, or name itself if unknown.
func (p Plan) Addr(name string) string {
	if a, ok := p.Addrs[name]; ok && a != "" {
		return a
	}
	return name
}

// MakePlan plans from the head's node list.
func MakePlan(nodes []registry.Node) Plan {
	p := Plan{Addrs: map[string]string{}}
	for _, n := range nodes {
		switch {
		case n.Role == registry.RoleHead:
			p.Head = n.Name
		case n.State != registry.StateDown:
			// Joining nodes too: they run from node1's root, and their
			// sshd is about to answer.
			p.Nodes = append(p.Nodes, n.Name)
			p.Addrs[n.Name] = n.IP
		default:
			p.Down = append(p.Down, n.Name)
		}
	}
	return p
}

// Describe says what the plan does, for --dry-run and before acting.
func (p Plan) Describe(verb string) string {
	var b strings.Builder
	if len(p.Nodes) > 0 {
		fmt.Fprintf(&b, "%s %d node(s) first: %s\n", verb, len(p.Nodes), hostlist.Compress(p.Nodes))
	} else {
		fmt.Fprintf(&b, "no other node is up\n")
	}
	if len(p.Down) > 0 {
		fmt.Fprintf(&b, "skip %s: down already\n", hostlist.Compress(p.Down))
	}
	head := p.Head
	if head == "" {
		head = "this machine (node1)"
	}
	if p.KeepHead {
		fmt.Fprintf(&b, "then leave %s on (a permanent node1, set up with localnode1; --include-head includes it)\n", head)
		return b.String()
	}
	fmt.Fprintf(&b, "then %s %s\n", verb, head)
	return b.String()
}

// Verdict is how one node's shutdown went.
type Verdict struct {
	Node      string
	Confirmed bool
	// How says why it counts as confirmed or not.
	How string
}

// Confirmer watches the registry for nodes going away.
type Confirmer struct {
	// Nodes polls the head's node list.
	Nodes func(ctx context.Context) ([]registry.Node, error)
	// Polls is how many times to look, Wait apart, before giving up on a
	// node: together the grace period.
	Polls int
	// Wait waits between polls (a sleep; tests pass a no-op). It
	// returns ctx's error when ctx ends first.
	Wait func(ctx context.Context) error
}

// Confirm turns the results of the power-off command into verdicts. A
// node whose command exited 0 confirmed itself. One whose ssh failed
// (exit 255: the connection dropped) or timed out is confirmed when it
// leaves the registry or is marked down within the grace period. A node
// whose command failed (systemctl refused, exit 1) is not confirmed: it is
// still up, so nothing will change.
func (c Confirmer) Confirm(ctx context.Context, results []pexec.Result) []Verdict {
	verdicts := make([]Verdict, len(results))
	pending := map[string]int{} // node -> index in verdicts
	for i, r := range results {
		v := Verdict{Node: r.Node}
		switch r.Status {
		case pexec.OK:
			v.Confirmed, v.How = true, "command accepted"
		case pexec.Unreachable, pexec.Timeout:
			pending[r.Node] = i
			v.How = fmt.Sprintf("%s, and still listed as up after the grace period", r.Detail)
		default:
			v.How = r.Detail
		}
		verdicts[i] = v
	}
	for poll := 0; len(pending) > 0 && poll < c.Polls; poll++ {
		if poll > 0 {
			if err := c.Wait(ctx); err != nil {
				break
			}
		}
		nodes, err := c.Nodes(ctx)
		if err != nil {
			continue // the head may be busy; the next poll may answer
		}
		up := map[string]bool{}
		for _, n := range nodes {
			if n.State == registry.StateUp {
				up[n.Name] = true
			}
		}
		for name, i := range pending {
			if !up[name] {
				verdicts[i].Confirmed = true
				verdicts[i].How = "connection dropped; the node left the registry"
				delete(pending, name)
			}
		}
	}
	return verdicts
}

// Unconfirmed returns the verdicts that are not confirmed.
func Unconfirmed(vs []Verdict) []Verdict {
	var out []Verdict
	for _, v := range vs {
		if !v.Confirmed {
			out = append(out, v)
		}
	}
	return out
}

// Report says which nodes did not confirm, and why; "" when all did.
func Report(vs []Verdict) string {
	bad := Unconfirmed(vs)
	if len(bad) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d nodes did not confirm:\n", len(bad), len(vs))
	for _, v := range bad {
		fmt.Fprintf(&b, "  %s: %s\n", v.Node, v.How)
	}
	return b.String()
}

// GoneAfter is how many polls in a row a node must not answer to count as
// gone: a node busy shutting down may miss one.
const GoneAfter = 5

// WaitGone waits until none of names is alive any more (alive asks one
// node), polling with wait between rounds, for at most polls rounds. A node
// that left the registry is still shutting down, and reads its root from
// node1 until its very last moment: node1 must stay up until the node is
// off the network, that is silent for GoneAfter polls in a row. It returns
// the nodes still alive at the end.
func WaitGone(ctx context.Context, names []string, polls int, wait func(context.Context) error, alive func(ctx context.Context, name string) bool) []string {
	left := names
	silent := map[string]int{}
	for i := 0; ; i++ {
		var still []string
		for _, n := range left {
			if alive(ctx, n) {
				silent[n] = 0
			} else {
				silent[n]++
			}
			if silent[n] < GoneAfter {
				still = append(still, n)
			}
		}
		left = still
		if len(left) == 0 || i+1 >= polls || ctx.Err() != nil {
			return left
		}
		if err := wait(ctx); err != nil {
			return left
		}
	}
}
