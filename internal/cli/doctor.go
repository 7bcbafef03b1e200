package cli

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/hosttools"
)

func newDoctorCmd() *cobra.Command {
	var fix bool
	var purposes []string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "List the host tools clusterdebian needs, which are missing, and how to get them",
		Long: `doctor checks this machine for the Debian tools that each part of clusterdebian
needs: "build" (clusterdebian build), "vm" (clusterdebian vm and the end-to-end
tests) and "test" (protocol tests and benchmarks). With --fix it installs the
missing ones with apt-get.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ps []hosttools.Purpose
			for _, p := range purposes {
				for _, one := range strings.Split(p, ",") {
					pp, err := hosttools.ParsePurpose(one)
					if err != nil {
						return fmt.Errorf("--for: %w", err)
					}
					ps = append(ps, pp)
				}
			}
			if len(ps) == 0 {
				ps = hosttools.Purposes
			}
			tools := hosttools.For(ps...)
			out := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOOL\tFOR\tPACKAGE\tSTATUS")
			for _, t := range tools {
				status := "ok"
				if !t.Present() {
					status = "MISSING"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Purpose, t.Package, status)
			}
			tw.Flush()
			missing := hosttools.Missing(tools)
			if len(missing) == 0 {
				fmt.Fprintln(out, "all tools present")
				return nil
			}
			pkgs := hosttools.Packages(missing)
			if !fix {
				fmt.Fprintf(out, "\n%d missing; install with: apt-get install %s\n(or: clusterdebian doctor --fix)\n", len(missing), strings.Join(pkgs, " "))
				return &exitError{code: 1}
			}
			fmt.Fprintf(out, "\ninstalling: %s\n", strings.Join(pkgs, " "))
			if err := hosttools.AptInstall(cmd.Context(), os.Stderr, pkgs...); err != nil {
				return err
			}
			if still := hosttools.Missing(tools); len(still) > 0 {
				return &hosttools.MissingError{Tools: still}
			}
			fmt.Fprintln(out, "all tools present")
			return nil
		},
	}
	cmd.Flags().BoolVar(&fix, "fix", false, "install the missing tools with apt-get")
	cmd.Flags().StringSliceVar(&purposes, "for", nil, "check only these purposes: build, vm, test (default all)")
	return cmd
}
