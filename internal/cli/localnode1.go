package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/localnode1"
	"github.com/clusterdebian/clusterdebian/internal/terminal"
)

// localnode1BuildDir holds the build localnode1 makes when no --from is
// given; the build's stages are cached as for any build.
const localnode1BuildDir = "/var/cache/clusterdebian/localnode1-out"

func newLocalNode1Cmd() *cobra.Command {
	var (
		opts                         localnode1.Options
		configPath                   string
		yes, remove, dryRun, sharedR bool
	)
	cmd := explainErrors(&cobra.Command{
		Use:   "localnode1 --interface IF [--from OUTDIR] [--config FILE]",
		Short: "Make this installed Debian machine a permanent node1 (or undo it with --remove)",
		Long: `localnode1 turns the Debian 12 or 13 machine it runs on into node1 of a
cluster, for good: the other machines boot from it over the network on the
interface IF, as from a live node1. It

  - installs the Debian packages the head needs (NFS server, iPXE, Open MPI);
  - installs this binary and the head daemon's service (clusterdebian-head),
    which starts at every boot;
  - puts the netboot files of a clusterdebian build (--from OUTDIR; without
    it, it builds them) into /var/lib/clusterdebian/boot;
  - gives IF the subnet's .1 address, in the host's network configuration
    (NetworkManager, systemd-networkd or ifupdown), and exports /home to the
    cluster subnet only.

The host keeps its host name and its root file system. Nodes run from RAM
(nodes.root = "ram") and share the host's /home; --shared-root exports the
host's whole root to them instead, which lets any node damage the host.

It shows its plan and asks before changing anything (--yes does not ask),
refuses the interface of the default route (--force overrides), and a second
run changes nothing. Everything it changes is recorded, and
"clusterdebian localnode1 --remove" puts it all back (the packages stay).
"clusterdebian shutdown" leaves such a node1 on unless --include-head.`,
		Example: `  sudo clusterdebian localnode1 --interface enp3s0 --from out
  sudo clusterdebian localnode1 --interface enp3s0 --config cluster.toml --yes
  sudo clusterdebian localnode1 --remove`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			if err := requireRoot("localnode1"); err != nil {
				return err
			}
			sys := localnode1.Host(out)
			if remove {
				return runRemove(ctx, cmd, sys, yes, dryRun)
			}
			cfg, err := config.Load(configPath)
			if err != nil {
				return err
			}
			opts.Config = cfg
			opts.SharedRoot = sharedR
			if opts.Binary, err = os.Executable(); err != nil {
				return err
			}
			if opts.From == "" {
				if dryRun {
					return errors.New("--dry-run needs --from: without it, localnode1 builds the netboot files first")
				}
				fmt.Fprintf(out, "no --from: building the netboot files first (clusterdebian build; cached stages are reused) into %s\n", localnode1BuildDir)
				if err := buildForLocalNode1(ctx, opts.Binary, configPath, cmd.ErrOrStderr()); err != nil {
					return err
				}
				opts.From = localnode1BuildDir
			}
			plan, err := localnode1.MakePlan(ctx, sys, opts)
			if err != nil {
				return localnode1Hint(err)
			}
			for i, w := range plan.Warnings {
				plan.Warnings[i] = localnode1Inputs.explain(w)
			}
			plan.Describe(out)
			if len(plan.Changes) == 0 {
				return nil
			}
			fmt.Fprintln(out, "undo it with: clusterdebian localnode1 --remove")
			if dryRun {
				return nil
			}
			if !yes {
				if err := confirm(cmd.InOrStdin(), out); err != nil {
					return err
				}
			}
			if err := plan.Apply(ctx); err != nil {
				return localnode1Hint(err)
			}
			fmt.Fprintf(out, "done: this host is node1 on %s (%s); clusterdebian status lists the nodes as they boot\n", plan.Interface, plan.Address)
			return nil
		},
	}, localnode1Inputs)
	f := cmd.Flags()
	f.StringVar(&opts.Interface, "interface", "", "the cluster network interface (required)")
	f.StringVar(&opts.From, "from", "", "output folder of clusterdebian build with the netboot files (default: build them now)")
	f.StringVarP(&configPath, "config", "c", "", "the cluster's cluster.toml (default: the embedded default)")
	f.StringVar(&opts.DHCP, "dhcp", "", "DHCP mode: auto, server, proxy or off (default: network.dhcp)")
	f.BoolVar(&sharedR, "shared-root", false, "export this host's root file system to the nodes (nodes.root = \"shared\"); dangerous")
	f.BoolVar(&opts.Force, "force", false, "allow the interface of the default route, or one configured in /etc/network/interfaces")
	f.BoolVarP(&yes, "yes", "y", false, "do not ask before changing anything")
	f.BoolVar(&remove, "remove", false, "undo what localnode1 changed (the packages stay)")
	f.BoolVar(&dryRun, "dry-run", false, "show the plan and change nothing")
	return cmd
}

// localnode1Inputs are the flags of localnode1's inputs, and of the keys of
// the host's cluster.toml that they set.
var localnode1Inputs = inputs{
	localnode1.InputInterface:  {flag: "--interface"},
	localnode1.InputFrom:       {flag: "--from"},
	localnode1.InputSharedRoot: {flag: "--shared-root"},
	"network.interface":        {flag: "--interface"},
	"network.dhcp":             {"--dhcp", "network.dhcp"},
}

// localnode1Hint adds to a refusal the flag or command that gets past it.
func localnode1Hint(err error) error {
	switch {
	case errors.Is(err, localnode1.ErrDefaultRoute):
		return fmt.Errorf("%w, or --force if that network is the private cluster network", err)
	case errors.Is(err, localnode1.ErrIfupdownStanza):
		return fmt.Errorf("%w (or use --force to add a second one)", err)
	case errors.Is(err, localnode1.ErrOtherInterface):
		return fmt.Errorf("%w (clusterdebian localnode1 --remove)", err)
	case errors.Is(err, localnode1.ErrPartial):
		return fmt.Errorf("%w; clusterdebian localnode1 --remove undoes it", err)
	}
	return err
}

// runRemove undoes a localnode1 setup.
func runRemove(ctx context.Context, cmd *cobra.Command, sys *localnode1.System, yes, dryRun bool) error {
	out := cmd.OutOrStdout()
	rm, err := localnode1.PlanRemove(sys)
	if err != nil {
		return err
	}
	if rm == nil {
		fmt.Fprintf(out, "nothing to remove: this host was not set up with localnode1 (no %s)\n", localnode1.RecordPath)
		return nil
	}
	rm.Describe(out)
	if dryRun {
		return nil
	}
	if !yes {
		if err := confirm(cmd.InOrStdin(), out); err != nil {
			return err
		}
	}
	if err := rm.Remove(ctx); err != nil {
		return fmt.Errorf("--remove: %w", err)
	}
	fmt.Fprintln(out, "done: this host is no longer node1")
	return nil
}

// confirm asks on a terminal; elsewhere it refuses, since nobody can answer.
func confirm(in io.Reader, out io.Writer) error {
	if !terminal.Is(in) {
		return errors.New("not changing anything: standard input is not a terminal to ask on; run again with --yes to go ahead")
	}
	fmt.Fprint(out, "Go ahead? [y/N] ")
	line, _ := bufio.NewReader(in).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("nothing changed")
}

// buildForLocalNode1 runs `clusterdebian build` as a child, so that its
// progress, log and cache work exactly as when a user runs it.
func buildForLocalNode1(ctx context.Context, binary, configPath string, stderr io.Writer) error {
	args := []string{"build", "--output", localnode1BuildDir}
	if configPath != "" {
		abs, err := filepath.Abs(configPath)
		if err != nil {
			return err
		}
		args = append(args, "--config", abs)
	}
	b := exec.CommandContext(ctx, binary, args...)
	b.Stdout, b.Stderr = stderr, stderr
	if err := b.Run(); err != nil {
		return fmt.Errorf("building the netboot files (give a finished build with --from to skip this): %w", err)
	}
	return nil
}
