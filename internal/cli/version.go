package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/version"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of clusterdebian",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), version.Long())
			return nil
		},
	}
}
