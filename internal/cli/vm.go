package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/clusterdebian/clusterdebian/internal/terminal"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

func newVMCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Run a virtual ClusterDebian cluster in QEMU, to try it without spare machines",
		Long: `vm runs a whole cluster on this machine: node1 boots the ISO in QEMU, and the
other VMs boot from it over the network, as real machines would. The VMs share
a bridge inside a network namespace of their own (cdvm-<name>), so nothing
reaches or touches this machine's network. Every VM runs a QEMU guest agent
(vm exec) and has a serial console (vm console). The VMs keep running after
vm up returns, until vm stop or vm down.

The VMs are node1 (the head) and vm2, vm3, ...; a node may also be named by
its host name in the cluster (node12), which its guest agent tells.

Everything here needs root. State is kept in ` + vm.StateRoot + `/<name>/.`,
		Example: `  sudo clusterdebian vm up --iso out/clusterdebian.iso --nodes 2
  sudo clusterdebian vm list
  sudo clusterdebian vm exec node1 -- clusterdebian status
  sudo clusterdebian vm console vm2
  sudo clusterdebian vm down`,
	}
	cmd.AddCommand(newVMUpCmd(), newVMListCmd(), newVMExecCmd(), newVMStopCmd(), newVMStartCmd(), newVMConsoleCmd(), newVMSysRqCmd(), newVMDownCmd())
	return cmd
}

// nameFlag adds --name to a vm subcommand, and has its errors name its
// flags and the command that gets past them (see vmHint).
func nameFlag(cmd *cobra.Command, name *string) {
	cmd.Flags().StringVar(name, "name", vm.DefaultName, "name of the virtual cluster")
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		return vmHint(vmInputs.explain(run(c, args)), *name)
	}
}

// vmInputs are the flags of the vm package's inputs.
var vmInputs = inputs{
	vm.InputName:       {flag: "--name"},
	vm.InputISO:        {flag: "--iso"},
	vm.InputNodes:      {flag: "--nodes"},
	vm.InputAccel:      {flag: "--accel"},
	vm.InputMemory:     {flag: "--memory"},
	vm.InputNodeMemory: {flag: "--node-memory"},
	vm.InputCPUs:       {flag: "--cpus"},
	vm.InputLAN:        {flag: "--lan"},
}

// vmHint adds to an error about a virtual cluster's state the command that
// gets past it; name is the cluster's.
func vmHint(err error, name string) error {
	var stopped *vm.StoppedError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, vm.ErrNoCluster):
		return fmt.Errorf("%w; start one with clusterdebian vm up --name %s --iso FILE", err, name)
	case errors.Is(err, vm.ErrAlreadyUp):
		return fmt.Errorf("%w; see clusterdebian vm list --name %s, or remove it with clusterdebian vm down --name %s", err, name, name)
	case errors.Is(err, vm.ErrLeftover):
		return fmt.Errorf("%w; remove them with clusterdebian vm down --name %s", err, name)
	case errors.Is(err, vm.ErrNoVM):
		return fmt.Errorf("%w; see clusterdebian vm list --name %s", err, name)
	case errors.As(err, &stopped):
		return fmt.Errorf("%w (clusterdebian vm start --name %s %s)", err, name, stopped.VM)
	case errors.Is(err, vm.ErrNetNSGone):
		return fmt.Errorf("%w; remove the cluster with clusterdebian vm down --name %s and bring it up again", err, name)
	}
	return err
}

// vmRoot refuses to go on without root, which the VMs' sockets, processes and
// namespace need.
func vmRoot(what string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("vm %s must run as root (the VMs' QEMU processes, sockets and network namespace are root's); try sudo clusterdebian vm %s", what, what)
	}
	return nil
}

// loadCluster is vm.LoadCluster after the root check.
func loadCluster(what, name string) (*vm.Cluster, error) {
	if err := vmRoot(what); err != nil {
		return nil, err
	}
	return vm.LoadCluster(name)
}

func newVMUpCmd() *cobra.Command {
	var o vm.UpOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create a virtual cluster and boot it: node1 from the ISO, then --nodes VMs from the network",
		Long: `up creates the cluster's private network and boots node1 from the ISO (BIOS,
as a CD-ROM). Once node1 shows its login prompt (its head daemon serves), it
starts the other VMs: empty disks, network boot first, so they boot from node1
like diskless machines. With --secure-boot every VM is a UEFI PC with Secure
Boot on and Microsoft's keys, as PCs ship: node1 boots the ISO as a USB stick
and the nodes boot with the firmware's own PXE client, all through Debian's
signed shim, GRUB and kernel. It shows each VM's progress and returns once every
node has joined (node1's clusterdebian status lists it up). The VMs keep
running afterwards; vm down removes them.

Under TCG (the default) a VM boots in a few minutes; --accel kvm is much
faster where KVM works.

Two options put the cluster in the rooms real clusters are often in:

--lan puts it on a lab's or office's LAN: the cluster's network gets its own
router, DHCP and DNS server (dnsmasq, leases of ` + vm.LANLease.String() + `), by default
on ` + vm.DefaultLAN + ` with the router at .1; --lan=CIDR picks another subnet,
/24 or wider. node1 takes an address there by DHCP and serves proxyDHCP: the
nodes get their addresses from the LAN's server, and node1's status says so.

--uplink gives node1 a second NIC, on ` + vm.UplinkSubnet + ` with its own router,
DHCP and DNS server: the way out. node1 keeps the first NIC for the cluster
and forwards the nodes out of the second with NAT.

Behind each room's router is "the outside": ` + vm.OutsideName + ` (` + vm.OutsideAddr + `), a
web server whose ` + vm.WhoamiPath + ` says which address asked. Each room is a
network namespace, cdvm-<name>.lan or cdvm-<name>.uplink, to look into with
ip netns exec; its logs and leases are in ` + vm.StateRoot + `/<name>/lan (or uplink).`,
		Example: `  sudo clusterdebian vm up --iso out/clusterdebian.iso --nodes 2
  sudo clusterdebian vm up --name lab --iso out/clusterdebian.iso --nodes 2 --lan
  sudo clusterdebian vm up --name lab --iso out/clusterdebian.iso --lan=10.20.0.0/22
  sudo clusterdebian vm up --name out --iso out/clusterdebian.iso --nodes 1 --uplink
  sudo clusterdebian vm exec --name out vm2 -- getent hosts ` + vm.OutsideName + ``,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Progress = cmd.OutOrStdout()
			start := time.Now()
			c, err := vm.Up(cmd.Context(), o)
			switch {
			case err != nil && c != nil && cmd.Context().Err() != nil:
				return fmt.Errorf("interrupted; the VMs keep running (clusterdebian vm list --name %s); remove them with clusterdebian vm down --name %s", c.Name, c.Name)
			case err != nil && c != nil:
				// The VMs run: say how to look at them, and how to remove them.
				return fmt.Errorf("%w\nLook at it with clusterdebian vm console --name %s VM; remove it with clusterdebian vm down --name %s", err, c.Name, c.Name)
			case err != nil:
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s is up after %s: %d VMs. Try:\n  clusterdebian vm list --name %[1]s\n  clusterdebian vm exec --name %[1]s node1 -- clusterdebian status\n  clusterdebian vm console --name %[1]s node1\n",
				c.Name, time.Since(start).Round(time.Second), len(c.VMs))
			if (c.LAN != nil || c.Uplink != nil) && len(c.VMs) > 1 {
				fmt.Fprintf(cmd.OutOrStdout(), "  clusterdebian vm exec --name %s %s -- bash -c 'exec 3<>/dev/tcp/%s/80; printf \"GET %s HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'\n",
					c.Name, c.VMs[1].Name, vm.OutsideName, vm.WhoamiPath)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "  clusterdebian vm down --name %s\n", c.Name)
			return nil
		},
	}
	f := cmd.Flags()
	nameFlag(cmd, &o.Name)
	f.StringVar(&o.ISO, "iso", "", "the ClusterDebian ISO node1 boots (required)")
	f.IntVar(&o.Nodes, "nodes", 1, "number of VMs that boot from node1, besides node1")
	f.StringVar(&o.Accel, "accel", "tcg", "QEMU accelerator: tcg (works everywhere) or kvm (fast)")
	f.IntVar(&o.MemoryMiB, "memory", vm.DefaultHeadMemoryMiB, "node1's memory in MiB (its live root lives in RAM)")
	f.IntVar(&o.NodeMemoryMiB, "node-memory", vm.DefaultNodeMemoryMiB, "each other VM's memory in MiB")
	f.IntVar(&o.CPUs, "cpus", 1, "virtual CPUs per VM")
	f.BoolVar(&o.SecureBoot, "secure-boot", false, "boot every VM with UEFI and Secure Boot on, with the keys PCs ship with (node1 from the ISO as a USB stick, the nodes with the firmware's own PXE client)")
	f.BoolVar(&o.Display, "display", false, "give node1 a VGA card (for image.desktop): its screen and keyboard are reached through QEMU's monitor, monitor.sock in its folder")
	f.DurationVar(&o.BootTimeout, "timeout", 20*time.Minute, "how long node1 may take to boot, and then the nodes to join")
	f.StringVar(&o.LAN, "lan", "", "put the cluster on a LAN with its own router, DHCP and DNS server; --lan=CIDR for a subnet other than "+vm.DefaultLAN)
	f.Lookup("lan").NoOptDefVal = vm.DefaultLAN
	f.BoolVar(&o.Uplink, "uplink", false, "give node1 a second NIC on an uplink (router, DHCP, DNS) through which the nodes reach "+vm.OutsideName)
	return cmd
}

func newVMListCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the VMs of a virtual cluster: VM, MAC, node name and state",
		Long: `list shows every VM of the cluster: its VM name, MAC address, its host name in
the cluster (from its guest agent; "-" while the agent does not answer) and
whether its QEMU runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadCluster("list", name)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "VM\tMAC\tNODE\tSTATE")
			for _, i := range c.List(cmd.Context()) {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", i.VM, i.MAC, i.Node, i.State())
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, r := range []*vm.RoomState{c.LAN, c.Uplink} {
				if r != nil {
					fmt.Fprintln(cmd.OutOrStdout(), r.Describe())
				}
			}
			return nil
		},
	}
	nameFlag(cmd, &name)
	return cmd
}

func newVMExecCmd() *cobra.Command {
	var name string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "exec NODE -- COMMAND [ARG...]",
		Short: "Run a command as root on a VM, through its guest agent",
		Long: `exec runs COMMAND with its ARGs as root on the VM NODE, through the QEMU guest
agent, prints its output and exits with its exit code. NODE is a VM name
(node1 is the head), a node's host name (node12) or a MAC address.

No shell is involved: COMMAND is looked up in the guest's PATH and each ARG
is passed as it is. For pipes, redirections or variables, run a shell:
  clusterdebian vm exec node1 -- sh -c 'dmesg | tail'
Flags of exec go before NODE; everything after NODE belongs to the command.
The command gets no input, and its output arrives when it has exited.`,
		Example: `  sudo clusterdebian vm exec node1 -- clusterdebian status
  sudo clusterdebian vm exec --timeout 30s node12 -- ip -br addr`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			// With flags parsed only up to NODE, pflag hands a "--" after
			// NODE through as an argument.
			if args[1] == "--" {
				args = append(args[:1], args[2:]...)
			}
			if len(args) < 2 {
				return errors.New("vm exec: no command after NODE")
			}
			c, err := loadCluster("exec", name)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			stdout, stderr, code, err := c.Exec(ctx, args[0], args[1:]...)
			fmt.Fprint(cmd.OutOrStdout(), stdout)
			fmt.Fprint(cmd.ErrOrStderr(), stderr)
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					return fmt.Errorf("%w (--timeout %s)", err, timeout)
				}
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	// Everything after NODE is the command's, flags included: `exec node1 ls -l`.
	cmd.Flags().SetInterspersed(false)
	nameFlag(cmd, &name)
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up on the command after this long (it may keep running in the guest)")
	return cmd
}

func newVMStopCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "stop NODE",
		Short: "Power a VM off hard, like pulling its plug",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadCluster("stop", name)
			if err != nil {
				return err
			}
			return c.Stop(args[0])
		},
	}
	nameFlag(cmd, &name)
	return cmd
}

func newVMStartCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "start VM",
		Short: "Boot a stopped VM again",
		Long: `start powers a stopped VM on again; it boots as at vm up (node1 from the ISO,
the others from the network). It returns at once; watch the boot with
vm console.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadCluster("start", name)
			if err != nil {
				return err
			}
			if err := c.Start(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s started; watch it with: clusterdebian vm console --name %s %s\n", args[0], c.Name, args[0])
			return nil
		},
	}
	nameFlag(cmd, &name)
	return cmd
}

func newVMSysRqCmd() *cobra.Command {
	var name string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "sysrq NODE KEYS",
		Short: "Ask a VM's kernel through SysRq (t: tasks, w: blocked tasks, h: help)",
		Long: `sysrq presses Alt-SysRq with each of KEYS in turn on the VM's keyboard (its
QEMU monitor's sendkey), as a person at a hung machine would: "tw" dumps
every task and then the blocked ones. The kernel answers on its consoles;
sysrq prints what the VM's serial log gained within --wait, and the whole log
stays in the VM's folder. It works while the guest is hung, since the
kernel itself answers, not a program in it.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadCluster("sysrq", name)
			if err != nil {
				return err
			}
			if _, err := vm.SysRqKeys(args[1]); err != nil {
				return fmt.Errorf("vm sysrq: KEYS %q: %w", args[1], err)
			}
			m, err := c.Machine(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			before := fileSize(m.SerialPath)
			if err := m.SysRq(cmd.Context(), args[1]); err != nil {
				return err
			}
			select {
			case <-cmd.Context().Done():
			case <-time.After(wait):
			}
			out := cmd.OutOrStdout()
			if data, err := os.ReadFile(m.SerialPath); err == nil && int64(len(data)) > before {
				out.Write(data[before:])
				fmt.Fprintln(out)
			}
			fmt.Fprintf(out, "(the kernel's answer is in %s)\n", m.SerialPath)
			return nil
		},
	}
	nameFlag(cmd, &name)
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Second, "print what the serial log gained within this long after the last key")
	return cmd
}

// fileSize is the size of path, 0 when it cannot be read.
func fileSize(path string) int64 {
	if fi, err := os.Stat(path); err == nil {
		return fi.Size()
	}
	return 0
}

func newVMConsoleCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "console NODE",
		Short: "Attach to a VM's serial console (Ctrl-] detaches)",
		Long: `console connects the terminal to the VM's serial console, where its boot
messages and a login prompt are. Ctrl-] detaches. When standard input is not a
terminal it is copied as it is, and the console's output is shown until the VM
stops or the command is interrupted. Everything the console says is also
logged, in ` + vm.StateRoot + `/<name>/<VM>/` + vm.SerialLogFile + `.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadCluster("console", name)
			if err != nil {
				return err
			}
			sock, v, err := c.ConsoleSocket(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			stderr := cmd.ErrOrStderr()
			if !terminal.Is(os.Stdin) {
				return vm.AttachConsole(cmd.Context(), sock, os.Stdin, cmd.OutOrStdout(), false)
			}
			if tail := vm.SerialTail(v, 5); tail != "" {
				fmt.Fprintf(stderr, "%s\n", tail)
			}
			fmt.Fprintf(stderr, "--- %s serial console; Ctrl-] detaches (press Enter for a prompt) ---\n", v.Name)
			fd := int(os.Stdin.Fd())
			old, err := term.MakeRaw(fd)
			if err != nil {
				return fmt.Errorf("console: raw terminal: %w", err)
			}
			err = vm.AttachConsole(cmd.Context(), sock, os.Stdin, cmd.OutOrStdout(), true)
			term.Restore(fd, old)
			fmt.Fprintf(stderr, "\n--- detached from %s ---\n", v.Name)
			if errors.Is(err, vm.ErrDetached) {
				return nil
			}
			return err
		},
	}
	nameFlag(cmd, &name)
	return cmd
}

func newVMDownCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop every VM of a virtual cluster and remove its network and state",
		Long: `down kills every VM of the cluster and removes its taps, bridge, network
namespace and state folder. It is safe to run more than once, and after a
crash: it removes whatever of the cluster it finds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := vmRoot("down"); err != nil {
				return err
			}
			if err := vm.Down(name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s is down\n", name)
			return nil
		},
	}
	nameFlag(cmd, &name)
	return cmd
}
