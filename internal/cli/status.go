package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/role"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
	"github.com/clusterdebian/clusterdebian/internal/terminal"
)

func newStatusCmd() *cobra.Command {
	var (
		headURL  string
		asJSON   bool
		watch    bool
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List the cluster's nodes: state, cores, load, memory",
		Long: `status asks the head for its node registry and prints one line per node:
its name and address, whether it is up (heartbeating) or down, its cores,
1-minute load, memory in use, uptime and when the head last heard from it,
and a summary line under the table; with Slurm, each node's Slurm state
and the jobs under it (the head's GET /api/v1/slurm). Above the table it says which network
node1 serves, in which DHCP mode and why (the head's GET /api/v1/network).

With --watch it asks again every --interval and redraws the table (on a
terminal; elsewhere it prints one table after the other) until interrupted.

On a node the head's address comes from the kernel command line; on node1
the head is this machine.`,
		Example: `  clusterdebian status
  clusterdebian status --watch --interval 5s
  clusterdebian status --json | jq '.[] | select(.state == "down") | .name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := headClient(headURL, "", nil)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if watch {
				if asJSON {
					return fmt.Errorf("--watch draws the table; it does not go with --json")
				}
				if interval <= 0 {
					return fmt.Errorf("--interval must be positive")
				}
				return watchStatus(cmd.Context(), out, c, interval, terminal.CanRedraw(out))
			}
			nodes, err := listNodes(cmd.Context(), c)
			if err != nil {
				return err
			}
			if !asJSON {
				// Which network node1 serves, in which mode and why; a head
				// from before this API has nothing to say.
				if n, err := c.Network(cmd.Context()); err == nil {
					for _, l := range networkLines(n) {
						fmt.Fprintln(out, l)
					}
					fmt.Fprintln(out)
				}
			}
			if asJSON {
				data, err := json.MarshalIndent(nodes, "", "  ")
				if err != nil {
					return err
				}
				_, err = out.Write(append(data, '\n'))
				return err
			}
			if err := printStatus(out, nodes, time.Now()); err != nil {
				return err
			}
			// Each node's Slurm state and the jobs; a head without Slurm
			// (or from before it) has nothing to say.
			var st slurm.Status
			if err := c.Call(cmd.Context(), http.MethodGet, slurm.PathStatus, nil, &st); err == nil {
				if lines := slurmLines(st, nodes); len(lines) > 0 {
					fmt.Fprintln(out)
					for _, l := range lines {
						fmt.Fprintln(out, l)
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&headURL, "head", "", "the head's address or URL (default: clusterdebian.head= on a node, else http://127.0.0.1)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the head's JSON instead of a table")
	cmd.Flags().BoolVar(&watch, "watch", false, "redraw the table every --interval until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often --watch asks the head")
	return cmd
}

// defaultHeadURL is the head's URL as this machine sees it: from the kernel
// command line on a network-booted node, this machine on node1.
func defaultHeadURL() string {
	if c, err := role.Cmdline(); err == nil && c.Node && c.Head.IsValid() {
		return c.HTTPBase()
	}
	return "http://127.0.0.1"
}

// networkLines describes the head's cluster network for people: the
// summary, where node1 is, and a warning when something does not work.
func networkLines(n registry.Network) []string {
	lines := []string{"Network: " + n.Summary}
	where := "node1 is " + n.Address + " on " + n.Interface
	switch n.AddressSource {
	case "lease":
		where += ", leased from the LAN's DHCP server"
	case "configured":
		where += " (network.address)"
	case "interface":
		where += " (configured on the interface)"
	}
	lines = append(lines, "         "+where)
	for _, o := range n.OtherServers {
		lines = append(lines, fmt.Sprintf("         another DHCP server: %s (%s, %s)", o.Server, o.Description, o.Time.Local().Format("15:04:05")))
	}
	if n.Warning != "" {
		lines = append(lines, "Warning: "+n.Warning)
	}
	return lines
}

// printNodes writes the status table.
func printNodes(w io.Writer, nodes []registry.Node, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIP\tSTATE\tCORES\tLOAD\tMEM\tUPTIME\tLAST-SEEN")
	for _, n := range nodes {
		name := n.Name
		if n.Role == registry.RoleHead {
			name += " (head)"
		}
		mem := "-"
		if n.MemTotalKiB > 0 {
			mem = fmt.Sprintf("%s/%s", kib(n.MemUsedKiB), kib(n.MemTotalKiB))
		}
		seen := "-"
		if !n.LastSeen.IsZero() {
			seen = shortDuration(now.Sub(n.LastSeen)) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.2f\t%s\t%s\t%s\n", name, n.IP, n.State, n.Cores, n.Load1, mem,
			shortDuration(time.Duration(n.UptimeSec)*time.Second), seen)
	}
	if len(nodes) == 0 {
		fmt.Fprintln(tw, "(no nodes registered)")
	}
	return tw.Flush()
}

// kib formats a size in KiB like free -h: 512M, 7.8G.
func kib(v uint64) string {
	switch {
	case v >= 1<<20:
		return fmt.Sprintf("%.1fG", float64(v)/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%dM", v>>10)
	}
	return fmt.Sprintf("%dK", v)
}

// shortDuration formats d in its two largest units: 3d4h, 5h12m, 42s.
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s >= 86400:
		return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
	case s >= 3600:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	case s >= 60:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	}
	return fmt.Sprintf("%ds", s)
}
