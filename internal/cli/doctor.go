package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/doctor"
	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/hosttools"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

func newDoctorCmd() *cobra.Command {
	var fix, cluster, tools bool
	var purposes []string
	var configPath string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check the running cluster on node1, or the host tools clusterdebian needs",
		Long: `On node1 of a running cluster (a head runs on this machine), doctor checks
the cluster and prints one line per check, OK, WARN or FAIL with its cause:

  ports       the head's sockets for its DHCP mode: DHCP (67, and 4011 for
              proxyDHCP), TFTP (69) and HTTP (80) on node1's cluster address
  exports     each registered node's NFS export (exportfs -s): / on the
              shared root, /home on the RAM root
  state       free room in the head's state folder (a tmpfs in RAM on a live
              node1): FAIL below 1 MiB, WARN below 8 MiB
  memory      MemAvailable: FAIL below 64 MiB, WARN below a tenth of RAM
  certs       node1's SSH host certificate: signed by the cluster CA, and its
              expiry (WARN within 7 days)
  heartbeats  the nodes the head marked down for missed heartbeats (WARN)

It exits 1 if any check FAILs. Run it as root: the head's state folder is
root's.

Elsewhere (or with --tools) it checks this machine for the Debian tools that
each part of clusterdebian needs: "build" (clusterdebian build), "vm"
(clusterdebian vm and the end-to-end tests) and "test" (protocol tests and
benchmarks). With --fix it installs the missing ones with apt-get.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cluster && (tools || fix || len(purposes) > 0) {
				return errors.New("--cluster checks the running cluster; --tools, --fix and --for check the host tools: choose one")
			}
			if !tools && !fix && len(purposes) == 0 {
				if !cluster {
					_, err := os.Stat(filepath.Join(contract.RunDir, contract.NetworkFile))
					cluster = err == nil
				}
				if cluster {
					return doctorCluster(cmd, configPath)
				}
			}
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
	cmd.Flags().BoolVar(&cluster, "cluster", false, "check the running cluster (the default on a machine where the head runs)")
	cmd.Flags().BoolVar(&tools, "tools", false, "check the host tools (the default where no head runs)")
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "with --cluster: cluster.toml (default: "+systemConfig+" if present, else the embedded default)")
	cmd.Flags().BoolVar(&fix, "fix", false, "install the missing tools with apt-get")
	cmd.Flags().StringSliceVar(&purposes, "for", nil, "check only these purposes: build, vm, test (default all)")
	return cmd
}

// doctorCluster runs doctor's checks of the running cluster on this
// machine, with the cluster.toml the head reads.
func doctorCluster(cmd *cobra.Command, configPath string) error {
	path := configPath
	system := false
	if _, err := os.Stat(systemConfig); err == nil {
		system = true
		if path == "" {
			path = systemConfig
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", systemConfig, err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	o, err := headOptions(cfg)
	if err != nil {
		return err
	}
	stateDir := o.StateDir
	if stateDir == "" {
		stateDir = contract.StateDir
	}
	root := o.Root
	if root == "" {
		root = contract.RootShared
	}
	opts := doctor.Options{
		Root:     root,
		StateDir: stateDir,
		HTTPPort: o.HTTPPort,
		// The live system's certificate, and an installed node1's
		// (localnode1), as the head writes them (head.hostCertificate).
		Certs: []string{filepath.Join(contract.RunDir, "ssh", sshtrust.HostCertFile), "/" + head.InstalledHostCert},
		CAPub: filepath.Join(stateDir, contract.CAKeyFile+".pub"),
		// The head exports to the nodes where it keeps this machine's
		// root: on a ClusterDebian system (see newHeadCmd).
		Exports: system,
	}
	if os.Geteuid() != 0 {
		// The state folder and the CA's key are root's: say why a check
		// may fail, rather than refuse the others.
		fmt.Fprintln(cmd.ErrOrStderr(), "not root: the checks that read the head's state folder may fail for lack of permission (sudo clusterdebian doctor)")
	}
	rs := doctor.Run(cmd.Context(), doctor.HostSystem(o.HTTPPort), opts)
	printResults(cmd.OutOrStdout(), rs)
	if doctor.Failed(rs) {
		return &exitError{code: 1}
	}
	return nil
}

func printResults(w io.Writer, rs []doctor.Result) {
	for _, r := range rs {
		fmt.Fprintln(w, r)
	}
}
