package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// clearScreen moves the cursor home and clears the screen (ANSI), so that
// each redraw replaces the last instead of scrolling.
const clearScreen = "\x1b[H\x1b[2J"

// printStatus writes the node table and the summary line under it.
func printStatus(w io.Writer, nodes []registry.Node, now time.Time) error {
	if err := printNodes(w, nodes, now); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, summaryLine(nodes))
	return err
}

// summaryLine sums the cluster up: "3 nodes: 3 up, 0 down; 6 cores; load
// 1.2". Cores and load count the nodes that are up: what a job can use.
func summaryLine(nodes []registry.Node) string {
	up, joining, cores := 0, 0, 0
	load := 0.0
	for _, n := range nodes {
		switch n.State {
		case registry.StateUp:
			up++
			cores += n.Cores
			load += n.Load1
		case registry.StateJoining:
			joining++
		}
	}
	noun := "nodes"
	if len(nodes) == 1 {
		noun = "node"
	}
	if joining > 0 {
		// Only then: a settled cluster's line stays as it always was.
		return fmt.Sprintf("%d %s: %d up, %d joining, %d down; %d cores; load %.1f", len(nodes), noun, up, joining, len(nodes)-up-joining, cores, load)
	}
	return fmt.Sprintf("%d %s: %d up, %d down; %d cores; load %.1f", len(nodes), noun, up, len(nodes)-up, cores, load)
}

// watchStatus redraws the status every interval until ctx ends. A failed
// request is shown in place of the table and retried: the head may be
// restarting, and a watch should outlive that.
func watchStatus(ctx context.Context, w io.Writer, c *registry.Client, interval time.Duration, tty bool) error {
	return watchLoop(ctx, w, interval, tty, func() ([]registry.Node, error) {
		// Not cancelled with ctx: an interrupt ends the watch after this
		// table, not with a "context canceled" in its place.
		return listNodes(context.WithoutCancel(ctx), c)
	}, time.Now)
}

// watchLoop is watchStatus with the fetching and the clock passed in, for
// tests; it returns nil when ctx ends.
func watchLoop(ctx context.Context, w io.Writer, interval time.Duration, tty bool,
	fetch func() ([]registry.Node, error), now func() time.Time) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for first := true; ; first = false {
		nodes, err := fetch()
		switch {
		case tty:
			fmt.Fprint(w, clearScreen)
		case !first:
			fmt.Fprintln(w) // a blank line between tables
		}
		if tty {
			fmt.Fprintf(w, "every %v; %s\n\n", interval, now().Format("15:04:05"))
		}
		if err != nil {
			fmt.Fprintf(w, "clusterdebian status: %v\n", err)
		} else if err := printStatus(w, nodes, now()); err != nil {
			return err
		}
		if ctx.Err() != nil { // checked first: select picks at random among ready cases
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
