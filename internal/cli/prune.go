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
func prune(ctx context.Context, out io.Writer, c *registry.Client) error {
	gone, err := c.Prune(ctx)
	if err != nil {
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
