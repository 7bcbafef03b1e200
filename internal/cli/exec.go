package cli

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/hostlist"
	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

func newExecCmd() *cobra.Command {
	var (
		headURL string
		include string
		exclude string
		group   bool
		timeout time.Duration
		fanout  int
	)
	cmd := &cobra.Command{
		Use:   "exec [-w HOSTLIST] [-x HOSTLIST] [--group] [--timeout D] -- CMD...",
		Short: "Run a command on many nodes at once, over ssh",
		Long: `exec runs CMD on every selected node in parallel, over the cluster's
password-less ssh, and prints each output line prefixed by its node
("node3: ..."). With --group, nodes that printed the same output are shown
once, under the list of those nodes (like dshbak -c).

Nodes come from the head's node list. -w takes a host list: node[2-5,9],
node1,node[3-4], or "all" (the default): every node that is up. Node names
are never zero-padded (node8, not node08).
A node named in -w that is down, or unknown to the head, is reported and not
contacted. -x removes nodes from the selection.

exec exits 1 when any node failed, and says which and why: the command's
exit code, no answer within --timeout, ssh could not connect, down.`,
		Example: `  clusterdebian exec -- uptime
  clusterdebian exec -w 'node[2-9]' -x node5 --group -- uname -r
  clusterdebian exec --timeout 5m -- apt-get -y install htop`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// A typo in a host list is reported before anything else.
			if _, err := hostlist.Expand(include, nil); err != nil {
				return fmt.Errorf("-w: %w", err)
			}
			if exclude != "" {
				if _, err := hostlist.Expand(exclude, nil); err != nil {
					return fmt.Errorf("-x: %w", err)
				}
			}
			c, err := headClient(headURL, "", nil)
			if err != nil {
				return err
			}
			nodes, err := listNodes(cmd.Context(), c)
			if err != nil {
				return err
			}
			targets, notes, err := selectTargets(nodes, include, exclude)
			if err != nil {
				return err
			}
			errOut := cmd.ErrOrStderr()
			for _, n := range notes {
				fmt.Fprintln(errOut, "clusterdebian exec:", n)
			}
			if len(targets) == 0 {
				return fmt.Errorf("no nodes selected")
			}
			return runExec(cmd, targets, args, pexec.Options{Timeout: timeout, Fanout: fanout}, group)
		},
	}
	f := cmd.Flags()
	// Everything after the command's first word belongs to the command:
	// `exec -w node2 ls -l` must not read -l as a flag of exec.
	f.SetInterspersed(false)
	f.StringVar(&headURL, "head", "", "the head's address or URL (default: clusterdebian.head= on a node, else http://127.0.0.1)")
	f.StringVarP(&include, "nodes", "w", hostlist.All, "the nodes to run on, as a host list")
	f.StringVarP(&exclude, "exclude", "x", "", "nodes to leave out, as a host list")
	f.BoolVarP(&group, "group", "g", false, "show identical outputs once, under the list of their nodes")
	f.DurationVar(&timeout, "timeout", pexec.DefaultTimeout, "give up on a node that has not finished after this long")
	f.IntVar(&fanout, "fanout", pexec.DefaultFanout, "how many nodes to run on at once")
	return cmd
}

// runExec runs argv on targets and prints the outputs and the verdict.
func runExec(cmd *cobra.Command, targets []pexec.Target, argv []string, o pexec.Options, group bool) error {
	out := cmd.OutOrStdout()
	if !group {
		var mu sync.Mutex
		o.OnLine = func(node, line string) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(out, "%s: %s\n", node, line)
		}
	}
	res := pexec.Run(cmd.Context(), targets, argv, o)
	if group {
		if err := pexec.WriteGrouped(out, pexec.GroupOutputs(res)); err != nil {
			return err
		}
	}
	return execVerdict(res)
}

// execVerdict is nil when every node succeeded, else an exit error naming
// the nodes that did not, and why.
func execVerdict(res []pexec.Result) error {
	if sum := pexec.Summary(res); sum != "" {
		return &exitError{code: 1, msg: strings.TrimRight(sum, "\n")}
	}
	return nil
}

// selectTargets turns -w and -x into the nodes to run on, in the head's
// order (by address) for nodes it knows, then the others as written. "all"
// is every node that is up; notes says which were left out of it because
// they are down, so that nobody believes a command ran on them.
func selectTargets(nodes []registry.Node, include, exclude string) ([]pexec.Target, []string, error) {
	var up, down []string
	state := map[string]string{}
	for _, n := range nodes {
		state[n.Name] = n.State
		if n.State == registry.StateUp {
			up = append(up, n.Name)
		} else {
			down = append(down, n.Name)
		}
	}
	names, err := hostlist.Expand(include, up)
	if err != nil {
		return nil, nil, fmt.Errorf("-w: %w", err)
	}
	skip := map[string]bool{}
	if exclude != "" {
		ex, err := hostlist.Expand(exclude, up)
		if err != nil {
			return nil, nil, fmt.Errorf("-x: %w", err)
		}
		for _, n := range ex {
			skip[n] = true
		}
	}
	var notes []string
	if usesAll(include) {
		var left []string
		for _, n := range down {
			if !skip[n] && !slices.Contains(names, n) {
				left = append(left, n)
			}
		}
		if len(left) > 0 {
			notes = append(notes, fmt.Sprintf("%s down, not included in \"all\"", hostlist.Compress(left)))
		}
	}
	var targets []pexec.Target
	for _, n := range names {
		if skip[n] {
			continue
		}
		t := pexec.Target{Name: n}
		switch st, known := state[n]; {
		case !known:
			t.Skip = pexec.Unknown
		case st != registry.StateUp:
			t.Skip = pexec.Down
		}
		targets = append(targets, t)
	}
	return targets, notes, nil
}

// usesAll reports whether a host list has the item "all".
func usesAll(expr string) bool {
	for _, it := range strings.Split(expr, ",") {
		if strings.TrimSpace(it) == hostlist.All {
			return true
		}
	}
	return false
}
