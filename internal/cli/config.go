package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/config"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show or check cluster.toml",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print the default cluster.toml, with a comment on every key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(cmd.OutOrStdout(), config.DefaultTOML())
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Validate a cluster.toml and report every problem, by key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := config.Load(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	})
	return cmd
}
