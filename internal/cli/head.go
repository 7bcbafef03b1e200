package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/role"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
	"github.com/clusterdebian/clusterdebian/internal/uplink"
	"github.com/clusterdebian/clusterdebian/internal/version"
)

// systemConfig is the cluster.toml an image carries; the head on node1
// reads it unless told otherwise.
const systemConfig = "/etc/clusterdebian/cluster.toml"

func newHeadCmd() *cobra.Command {
	var (
		configPath, iface, subnet, address, dhcpMode, natMode, bootDir, stateDir, extra, clusterRoot string
		debug, simulated                                                                             bool
	)
	cmd := explainErrors(&cobra.Command{
		Use:   "head",
		Short: "Run the head daemon on node1: DHCP, TFTP and HTTP network boot for the nodes",
		Long: `head serves the cluster network from node1, so that every other machine
boots from it: DHCP (or ProxyDHCP beside an existing DHCP server), TFTP for
the iPXE boot loaders, and HTTP for each node's iPXE script, the kernel, the
initrd and the image layers.

node1's address on the cluster network is network.address when set, else an
address already on the interface, else (DHCP mode auto or proxy) one leased
from the LAN's own DHCP server, whose network then is the cluster network
for this boot, else .1 of the subnet. With an uplink (another interface with
a default route) and addresses of its own to hand out, node1 forwards the
nodes to the outside (network.nat). The cluster interface is --interface,
else clusterdebian.interface= on node1's kernel command line (the boot
menu), else network.interface, else the only connected wired one, or the
one where no other DHCP server answers and no default route goes. What the
head decided is at http://<head>/api/v1/network, on the login banner and in
clusterdebian status.

On a ClusterDebian live system it starts at boot (clusterdebian-head.service)
and serves the files of the medium it booted from. Every flag has a
cluster.toml key; a flag wins over the key. The boot progress of every node is
at http://<head>/api/v1/boot.`,
		Example: `  clusterdebian head
  clusterdebian head --interface enp3s0 --dhcp proxy
  clusterdebian head --boot-dir out/netboot --state-dir /tmp/head`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := configPath
			if path == "" {
				if _, err := os.Stat(systemConfig); err == nil {
					path = systemConfig
				} else if !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("--config: %w", err)
				}
			}
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			flags := cmd.Flags()
			set := func(flag string, key *string, value string) {
				if flags.Changed(flag) {
					*key = value
				}
			}
			set("interface", &cfg.Network.Interface, iface)
			set("subnet", &cfg.Network.Subnet, subnet)
			set("address", &cfg.Network.Address, address)
			set("dhcp", &cfg.Network.DHCP, dhcpMode)
			set("nat", &cfg.Network.NAT, natMode)
			set("boot-dir", &cfg.Head.BootDir, bootDir)
			set("state-dir", &cfg.Head.StateDir, stateDir)
			opts, err := headOptions(cfg)
			if err != nil {
				return err
			}
			// The flag adds to the image's own parameters (image.kernel_cmdline)
			// rather than replacing them: it is meant for one-off additions.
			opts.ExtraCmdline = strings.TrimSpace(cfg.Image.KernelCmdline + " " + extra)
			opts.SimulatedNodes = simulated
			// On a ClusterDebian system (its image carries the system config)
			// the head keeps the cluster files of its own root; elsewhere only
			// when asked, so that a test run never rewrites a host's /etc.
			switch clusterRoot {
			case "":
				if _, err := os.Stat(systemConfig); err == nil {
					opts.ClusterRoot = "/"
				}
			case "none":
			default:
				opts.ClusterRoot = clusterRoot
			}
			// node1's boot menu chooses the interface on its kernel command
			// line; an explicit --interface still wins.
			if !flags.Changed("interface") {
				if opts.BootInterface, err = bootInterface(role.ProcCmdline); err != nil {
					return err
				}
			}
			if err := requireRoot("head"); err != nil {
				return err
			}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			opts.Logger = head.NewLogger(os.Stderr, level)
			opts.Logger.Info("clusterdebian head starting", "version", version.String(), "config", cfg.Source)
			// Slurm runs where the head keeps this machine's root and the
			// image has it (cluster.scheduler).
			if cfg.HasScheduler(config.SchedulerSlurm) && opts.ClusterRoot == "/" {
				if v, err := slurm.InstalledVersion(cmd.Context()); err != nil {
					opts.Logger.Warn("cluster.scheduler is slurm, but Slurm is not installed here: no job queue", "err", err)
				} else {
					opts.Slurm = &head.SlurmOptions{Version: v, Node1Jobs: cfg.Slurm.RunsJobs()}
				}
			}
			return head.Run(cmd.Context(), opts)
		},
	}, headInputs)
	f := cmd.Flags()
	f.StringVarP(&configPath, "config", "c", "", "cluster.toml (default: "+systemConfig+" if present, else the embedded default)")
	f.StringVar(&iface, "interface", "", "cluster network interface: a name, a MAC or a place among the wired cards (network.interface; default: clusterdebian.interface= on the kernel command line, else the only connected wired one)")
	f.StringVar(&subnet, "subnet", "", "cluster subnet, e.g. 10.99.0.0/24 (network.subnet)")
	f.StringVar(&address, "address", "", "node1's address with the network's prefix length, e.g. 192.168.50.10/23 (network.address)")
	f.StringVar(&dhcpMode, "dhcp", "", "DHCP mode: auto, server, proxy or off (network.dhcp)")
	f.StringVar(&natMode, "nat", "", "the nodes' way out through node1: auto, on or off (network.nat)")
	f.StringVar(&bootDir, "boot-dir", "", "folder with vmlinuz, the initrds and the image layers (head.boot_dir; default "+head.DefaultBootDir+")")
	f.StringVar(&stateDir, "state-dir", "", "folder for leases, the cluster token and the TFTP root (head.state_dir; default "+head.DefaultStateDir+")")
	f.StringVar(&extra, "kernel-cmdline-extra", "", "kernel parameters added to every node's command line, after image.kernel_cmdline")
	f.StringVar(&clusterRoot, "cluster-root", "", "root file system whose /etc/hosts, hostfiles and SSH trust the head keeps, and exports to the nodes (default: / on a ClusterDebian system, else none; \"none\" disables)")
	f.BoolVar(&debug, "debug", false, "log every packet decision, not only requests and answers")
	// Hidden: only the simulators' benchmarks and tests want it.
	f.BoolVar(&simulated, "simulated-nodes", false, "take node requests from any address and port, for a simulator's made-up nodes (never on a real cluster)")
	if err := f.MarkHidden("simulated-nodes"); err != nil {
		panic(err)
	}
	return cmd
}

// bootInterface returns the cluster interface node1 was booted with
// (contract.ParamInterface on the kernel command line at path), "" when
// none. Only that parameter is read: the rest of a host's command line is
// none of the head's business.
func bootInterface(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", err
	}
	choice := ""
	for _, f := range strings.Fields(string(data)) {
		if strings.HasPrefix(f, contract.ParamInterface+"=") {
			c, err := contract.ParseCmdline(f)
			if err != nil {
				return "", fmt.Errorf("node1's kernel command line: %w", err)
			}
			choice = c.Interface // the last one counts, as for the kernel
		}
	}
	return choice, nil
}

// headOptions turns a cluster.toml (with flags applied) into the head's
// options. Its errors name the keys; headInputs adds the flags.
func headOptions(cfg *config.Config) (head.Options, error) {
	var o head.Options
	var errs []error
	// Flags bypass config validation, so check what they may have set again.
	c := *cfg
	if err := c.Validate(); err != nil {
		var ve *config.ValidationError
		if errors.As(err, &ve) {
			// Without "cluster.toml is invalid": a flag may be what is wrong.
			errs = append(errs, ve.Errs...)
		} else {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return o, errors.Join(errs...)
	}
	o.Interface = cfg.Network.Interface
	o.Subnet = cfg.Subnet()
	o.Address = cfg.Address()
	o.DHCP = dhcp.Mode(cfg.Network.DHCP)
	o.NAT = uplink.Mode(cfg.Network.NAT)
	if cfg.Network.Gateway != "" {
		o.Router = netip.MustParseAddr(cfg.Network.Gateway)
	}
	for _, d := range cfg.Network.DNS {
		o.DNS = append(o.DNS, netip.MustParseAddr(d))
	}
	o.BootDir = cfg.Head.BootDir
	o.StateDir = cfg.Head.StateDir
	o.Root = contract.RootMode(cfg.Nodes.Root)
	o.NoSwarm = !cfg.Nodes.SwarmOn()
	return o, nil
}

// headInputs maps the head's inputs to the flag and cluster.toml key that
// set them: the config keys (config validation errors name those) and the
// head.Options fields (head.New's errors name those), so that every error
// names where to change the value: "--subnet / network.subnet: ...".
var headInputs = inputs{
	"network.interface":    {"--interface", "network.interface"},
	"network.subnet":       {"--subnet", "network.subnet"},
	"network.address":      {"--address", "network.address"},
	"network.dhcp":         {"--dhcp", "network.dhcp"},
	"network.nat":          {"--nat", "network.nat"},
	"head.boot_dir":        {"--boot-dir", "head.boot_dir"},
	"head.state_dir":       {"--state-dir", "head.state_dir"},
	"image.kernel_cmdline": {"--kernel-cmdline-extra", "image.kernel_cmdline"},

	head.InputInterface:     {"--interface", "network.interface"},
	head.InputBootInterface: {"", contract.ParamInterface + "= (node1's kernel command line)"},
	head.InputSubnet:        {"--subnet", "network.subnet"},
	head.InputAddress:       {"--address", "network.address"},
	head.InputDHCP:          {"--dhcp", "network.dhcp"},
	head.InputNAT:           {"--nat", "network.nat"},
	head.InputRouter:        {"", "network.gateway"},
	head.InputDNS:           {"", "network.dns"},
	head.InputBootDir:       {"--boot-dir", "head.boot_dir"},
	head.InputStateDir:      {"--state-dir", "head.state_dir"},
	head.InputRoot:          {"", "nodes.root"},
	head.InputExtraCmdline:  {"--kernel-cmdline-extra", "image.kernel_cmdline"},
	head.InputClusterRoot:   {"--cluster-root", ""},
}
