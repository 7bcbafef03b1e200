package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

func newPruneCmd() *cobra.Command {
	var (
		headURL  string
		stateDir string
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Forget the nodes that are down (run as root on node1)",
		Long: `prune removes every node the head lists as down (it stopped heartbeating)
from the node registry, so from /etc/hosts and the MPI and PVM hostfiles too.
A pruned node that comes back registers again under its old name.

It asks the head with the cluster token, which only root on node1 can read
(from the head's state folder).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("prune must run as root on node1 (it reads the cluster token); try: sudo clusterdebian prune")
			}
			tok, err := readToken(stateDir)
			if err != nil {
				return err
			}
			addr := headURL
			if addr == "" {
				addr = "127.0.0.1" // node1, where the token is
			}
			// Pruning a large registry rewrites its file and the
			// hostfiles: more time than a listing.
			c, err := headClient(addr, tok, &http.Client{Timeout: 30 * time.Second})
			if err != nil {
				return err
			}
			return prune(cmd.Context(), cmd.OutOrStdout(), c)
		},
	}
	cmd.Flags().StringVar(&headURL, "head", "", "the head's address or URL (default: this machine)")
	cmd.Flags().StringVar(&stateDir, "state-dir", head.DefaultStateDir, "the head's state folder, which holds the cluster token")
	return cmd
}

// readToken reads the cluster token from the head's state folder.
func readToken(stateDir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(stateDir, contract.TokenFile))
	if err != nil {
		return "", fmt.Errorf("cluster token: %w (prune runs on node1, where the head keeps it; --state-dir)", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("cluster token file in %s is empty", stateDir)
	}
	return tok, nil
}

// prune has the head forget its down nodes and says which it forgot.
// Interrupted (ctx ends), it says which of the nodes that were down the
// head has forgotten and which it still lists (a *exitError, code 130).
func prune(ctx context.Context, out io.Writer, c *registry.Client) error {
	// The list before, so that an interrupted prune can say what it did.
	before, _, err := c.Nodes(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{code: 130, msg: "prune interrupted before it asked the head: nothing was pruned"}
		}
		return askError(err)
	}
	gone, err := c.Prune(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return pruneInterrupted(ctx, c, before)
		}
		return askError(err)
	}
	if len(gone) == 0 {
		_, err := fmt.Fprintln(out, "no node is down: nothing to prune")
		return err
	}
	for _, n := range gone {
		if _, err := fmt.Fprintf(out, "removed %s (%s, %s)\n", n.Name, n.IP, n.MAC); err != nil {
			return err
		}
	}
	return nil
}

// pruneAfterTimeout bounds the look at the registry after an interrupted
// prune.
const pruneAfterTimeout = 10 * time.Second

// pruneInterrupted says what an interrupted prune left. The head prunes in
// one step (registry.Registry.Prune, under its lock) and finishes a prune
// it got even when the client goes away, so the registry holds either
// every down node or none of those it pruned: one more look tells which.
func pruneInterrupted(ctx context.Context, c *registry.Client, before []registry.Node) error {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pruneAfterTimeout)
	defer cancel()
	after, _, err := c.Nodes(lctx)
	if err != nil {
		return &exitError{code: 130, msg: fmt.Sprintf("prune interrupted, and the head did not answer afterwards (%v): whether it pruned is unknown; clusterdebian nodes shows it, and prune may be run again", err)}
	}
	listed := map[string]registry.Node{}
	for _, n := range after {
		listed[n.MAC] = n
	}
	var removed, still []string
	for _, n := range before {
		if n.State != registry.StateDown {
			continue
		}
		if a, ok := listed[n.MAC]; !ok {
			removed = append(removed, fmt.Sprintf("%s (%s)", n.Name, n.IP))
		} else if a.State == registry.StateDown {
			still = append(still, fmt.Sprintf("%s (%s)", n.Name, n.IP))
		}
	}
	var b strings.Builder
	b.WriteString("prune interrupted")
	switch {
	case len(removed) > 0:
		fmt.Fprintf(&b, " after the head had pruned: it removed %s", strings.Join(removed, ", "))
	case len(still) > 0:
		b.WriteString(" before the head pruned: nothing was removed")
	default:
		b.WriteString(": no node was down, nothing was removed")
	}
	if len(still) > 0 {
		fmt.Fprintf(&b, "\nstill listed as down: %s; run clusterdebian prune again", strings.Join(still, ", "))
	}
	return &exitError{code: 130, msg: b.String()}
}
