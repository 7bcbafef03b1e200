package cli

import (
	"encoding/json"
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
			base := headURL
			if base == "" {
				base = "http://127.0.0.1"
			} else if base, err = headBase(headURL); err != nil {
				return err
			}
			gone, err := pruneNodes(base, tok)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(gone) == 0 {
				fmt.Fprintln(out, "no node is down: nothing to prune")
				return nil
			}
			for _, n := range gone {
				fmt.Fprintf(out, "removed %s (%s, %s)\n", n.Name, n.IP, n.MAC)
			}
			return nil
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

// pruneNodes asks the head at base to forget its down nodes and returns them.
func pruneNodes(base, token string) ([]registry.Node, error) {
	req, err := http.NewRequest(http.MethodPost, strings.TrimRight(base, "/")+registry.PathPrune, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the head: %w (is clusterdebian-head running?)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the head answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var gone []registry.Node
	if err := json.Unmarshal(body, &gone); err != nil {
		return nil, fmt.Errorf("the head's answer is not a node list: %w", err)
	}
	return gone, nil
}
