// Package head is the head daemon of a ClusterDebian cluster: the services
// node1 runs so that every other machine on the cluster network can boot
// from it. This part does network booting:
//
//   - DHCP (internal/netboot/dhcp) gives a booting node an address, or only
//     boot information beside another DHCP server, and tells its firmware
//     what to load: iPXE over TFTP for plain PXE firmware, or, once iPXE
//     runs, the URL of the node's iPXE script;
//   - TFTP (internal/netboot/tftp) serves the iPXE binaries, and to UEFI
//     PXE firmware Debian's signed shim and GRUB (the Secure Boot chain),
//     with the GRUB configuration that sends GRUB to the HTTP server;
//   - HTTP (internal/netboot/httpboot) serves each node's iPXE or GRUB
//     script (rendered here), the kernel, the initrd and the squashfs layers, and
//     the boot progress of every node at /api/v1/boot;
//   - one bootstage.Tracker follows each node through these stages, so the
//     log and the status API say where a node stalled.
//
// The head takes the cluster interface and its address itself, so that a
// node1 booted from the live medium needs no setup: on a private switch .1
// of the subnet, on a LAN that has its own DHCP server an address leased
// from that server (see network.go); and, with an uplink, it forwards the
// nodes to the outside (internal/uplink).
package head

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/agent"
	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/httpguard"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootfs"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcpclient"
	"github.com/clusterdebian/clusterdebian/internal/netboot/httpboot"
	"github.com/clusterdebian/clusterdebian/internal/netboot/tftp"
	"github.com/clusterdebian/clusterdebian/internal/uplink"
)

// Defaults of Options.
const (
	// DefaultBootDir is where live-boot mounts the medium node1 booted from:
	// a head started from the ISO serves the very files it booted itself.
	DefaultBootDir  = "/run/live/medium/live"
	DefaultStateDir = contract.StateDir
	// DefaultIPXEDir is where Debian's ipxe package puts its binaries.
	DefaultIPXEDir  = "/usr/lib/ipxe"
	DefaultHTTPPort = 80
)

// bootLinkTargets are the folders outside the boot-file trees that links in
// them may point into: Debian's /usr/lib/ipxe/ipxe.efi links to
// /boot/ipxe.efi.
var bootLinkTargets = []string{"/boot"}

// Options configure the head. The zero value of a field means its default.
type Options struct {
	// Interface is the cluster network interface, in any form of
	// contract.ParseInterfaceChoice (a name, a MAC, a place among the
	// wired cards); empty: the only connected, wired, physical one (or
	// bridge) of System.Links, or among several the one where no other
	// DHCP server answers and no default route goes.
	Interface string
	// BootInterface is the choice node1 was booted with
	// (contract.ParamInterface, from its boot menu); it wins over
	// Interface.
	BootInterface string
	// Subnet is the cluster network, an IPv4 prefix from /8 to /30 without
	// host bits (contract.CheckSubnet); the head takes .1 of it unless the
	// interface already has an address, or a LAN's DHCP server leases node1
	// one (network.go).
	Subnet netip.Prefix
	// Address, when valid, is node1's address with the cluster network's
	// prefix length (cluster.toml network.address): it wins over Subnet and
	// over a lease.
	Address netip.Prefix
	// DHCP is the DHCP mode; empty means auto.
	DHCP dhcp.Mode
	// NAT says whether the nodes reach the outside through node1
	// (uplink.Mode); empty means auto.
	NAT uplink.Mode
	// Router and DNS are handed to nodes when set (cluster.toml
	// network.gateway, network.dns). With NAT, Router is node1 and DNS,
	// unless set, node1's upstream resolvers.
	Router netip.Addr
	DNS    []netip.Addr
	// BootDir holds vmlinuz, initrd.img and the squashfs layers;
	// default DefaultBootDir.
	BootDir string
	// StateDir holds leases.json, the cluster token, the SSH CA key, the
	// node registry and the TFTP root; default DefaultStateDir. When the
	// head exports ClusterRoot, StateDir must not be readable through that
	// export: New refuses one on the exported file system.
	StateDir string
	// IPXEDir holds iPXE's binaries; default DefaultIPXEDir. Without them
	// (no such folder, Debian's ipxe package missing) the head still
	// serves, and says what cannot boot: plain PXE firmware and UEFI HTTP
	// boot load iPXE from here, nodes whose NIC ROM is iPXE do not.
	IPXEDir string
	// HTTPPort is the boot HTTP server's port; default 80.
	HTTPPort int
	// Root is the nodes' root: contract.RootShared (default) or RootRAM.
	Root contract.RootMode
	// NoSwarm turns the swarm boot off (cluster.toml nodes.swarm = false):
	// RAM-root nodes then fetch every layer from node1, and serve none.
	// The layers' sums stay on their command line, and are checked.
	NoSwarm bool
	// ExtraCmdline is appended to every node's kernel command line.
	ExtraCmdline string
	// SimulatedNodes takes node registrations, heartbeats and leaves from
	// any address and port (registry.FromNodeRoot off): a simulator's
	// made-up nodes (agent.Simulate) all talk from one address. Never on
	// a real cluster: any user on a node could then make other nodes leave.
	SimulatedNodes bool
	// ClusterRoot is the root file system whose cluster files (/etc/hosts,
	// hostfiles, SSH known hosts, user keys) the head keeps: "/" on node1.
	// When it is the machine's root (System.Root), the head also exports it
	// to the nodes over NFS and has sshd take node1's host certificate.
	// Empty: netboot and the registry only, touching no system files
	// (tests, benchmarks).
	ClusterRoot string
	// Logger gets the log; default slog.Default().
	Logger *slog.Logger
	// Slurm, when not nil and the head keeps ClusterRoot, has the head
	// run the cluster's Slurm (slurm.go).
	Slurm *SlurmOptions
	// System is the machine the head configures (its interfaces, NFS
	// server, sshd); default HostSystem(). Tests pass a fake.
	System System

	// adopt is the lease Run starts the head with when the cluster moves
	// to a LAN (errMove).
	adopt *dhcpclient.Lease
}

// withDefaults fills in defaults and checks the options; errors are
// *inputerr.Error naming the field.
func (o Options) withDefaults() (Options, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.System == nil {
		o.System = HostSystem()
	}
	if o.DHCP == "" {
		o.DHCP = dhcp.ModeAuto
	}
	if o.BootDir == "" {
		o.BootDir = DefaultBootDir
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.IPXEDir == "" {
		o.IPXEDir = DefaultIPXEDir
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = DefaultHTTPPort
	}
	if err := contract.CheckSubnet(o.Subnet); err != nil {
		return o, optionError(InputSubnet, err)
	}
	mode, err := dhcp.ParseMode(string(o.DHCP))
	if err != nil {
		return o, optionError(InputDHCP, err)
	}
	o.DHCP = mode
	nat, err := uplink.ParseMode(string(o.NAT))
	if err != nil {
		return o, optionError(InputNAT, err)
	}
	o.NAT = nat
	if a := o.Address; a.IsValid() {
		if err := contract.CheckSubnet(a.Masked()); err != nil || !a.Addr().Is4() {
			return o, optionErrorf(InputAddress, "%v: the cluster network must be an IPv4 network from /8 to /30", a)
		}
		if a.Addr() == a.Masked().Addr() || a.Addr() == contract.Broadcast(a) {
			return o, optionErrorf(InputAddress, "%v is the network's own or broadcast address, not a host's", a)
		}
	}
	root, err := contract.ParseRootMode(string(o.Root))
	if err != nil {
		return o, optionError(InputRoot, err)
	}
	o.Root = root
	if o.HTTPPort < 1 || o.HTTPPort > 65535 {
		return o, optionErrorf(InputHTTPPort, "%d is out of range", o.HTTPPort)
	}
	if err := contract.CheckExtra(o.ExtraCmdline); err != nil {
		return o, optionError(InputExtraCmdline, err)
	}
	for _, f := range []string{contract.KernelFile, contract.InitrdFile} {
		if _, err := os.Stat(filepath.Join(o.BootDir, f)); err != nil {
			hint := ""
			if o.BootDir == DefaultBootDir {
				hint = "; this is the live medium's folder, so either node1 did not boot from a ClusterDebian medium, or name the folder holding the netboot files (out/netboot of `clusterdebian build`)"
			}
			return o, optionErrorf(InputBootDir, "%s has no %s: nodes could not boot%s", o.BootDir, f, hint)
		}
	}
	if o.Root == contract.RootRAM {
		if _, err := os.Stat(filepath.Join(o.BootDir, contract.BaseLayer)); err != nil {
			return o, optionErrorf(InputBootDir, "%s has no %s, which the RAM root needs", o.BootDir, contract.BaseLayer)
		}
	}
	return o, nil
}

// missingLoaders returns the boot loaders that the TFTP tree lacks:
// iPXE's from the state folder's TFTP root or the iPXE folder, the Secure
// Boot chain's (shim and GRUB) from the TFTP root or the boot folder.
func missingLoaders(o Options) []string {
	var missing []string
	for _, f := range []struct {
		name string
		dirs []string
	}{
		{contract.BIOSBootFile, []string{filepath.Join(o.StateDir, contract.TFTPDir), o.IPXEDir}},
		{contract.UEFIBootFile, []string{filepath.Join(o.StateDir, contract.TFTPDir), o.IPXEDir}},
		{contract.UEFIPXEBootFile, []string{filepath.Join(o.StateDir, contract.TFTPDir), o.BootDir}},
		{contract.GRUBNetFile, []string{filepath.Join(o.StateDir, contract.TFTPDir), o.BootDir}},
	} {
		found := false
		for _, dir := range f.dirs {
			if st, err := os.Stat(filepath.Join(dir, f.name)); err == nil && st.Mode().IsRegular() {
				found = true
			}
		}
		if !found {
			missing = append(missing, f.name)
		}
	}
	return missing
}

// warnMissingLoaders says which machines cannot boot for lack of a loader,
// and how to get it; the head serves on for those that can.
func (h *Head) warnMissingLoaders() {
	missing := missingLoaders(h.opts)
	var ipxe, chain []string
	for _, f := range missing {
		switch f {
		case contract.BIOSBootFile, contract.UEFIBootFile:
			ipxe = append(ipxe, f)
		default:
			chain = append(chain, f)
		}
	}
	if len(ipxe) > 0 {
		var cannot []string
		for _, f := range ipxe {
			switch f {
			case contract.BIOSBootFile:
				cannot = append(cannot, "BIOS PXE firmware (it loads "+f+" over TFTP)")
			case contract.UEFIBootFile:
				cannot = append(cannot, "UEFI HTTP boot (it loads "+f+" over HTTP)")
			}
		}
		h.log.Warn("iPXE loaders missing: install Debian's ipxe package (apt-get install ipxe), which puts them in "+DefaultIPXEDir+
			"; until then "+strings.Join(cannot, " and ")+" cannot boot from this head, while machines whose network card runs iPXE from its ROM (QEMU, many servers) boot as usual",
			"missing", strings.Join(ipxe, ","), "ipxe_dir", h.opts.IPXEDir, "tftp_dir", filepath.Join(h.opts.StateDir, contract.TFTPDir))
	}
	if len(chain) > 0 {
		h.log.Warn("Secure Boot loaders missing from the boot folder: UEFI PXE firmware (it loads "+contract.UEFIPXEBootFile+", then "+contract.GRUBNetFile+", over TFTP) cannot boot from this head; "+
			"`clusterdebian build` puts Debian's signed shim and GRUB beside the kernel (out/netboot, the ISO's live/): serve the netboot files of a build of this version",
			"missing", strings.Join(chain, ","), "boot_dir", h.opts.BootDir)
	}
}

// Head is a running head: what Run set up, for tests and the status page.
type Head struct {
	opts   Options
	sys    System
	log    *slog.Logger
	iface  string
	addr   netip.Addr
	naming contract.Naming
	// plan is the cluster network as New decided it, and net what changes
	// of it while the head runs (network.go).
	plan netPlan
	net  netState
	// evidence carries dhcp's evidence of other servers to runNetwork.
	evidence chan dhcp.Evidence
	// clock is the lease keeper's time; nil is the real one.
	clock dhcpclient.Clock
	// holders maps each registered node's address to its MAC, for DHCP's
	// check that an address is free (dhcp.Config.InUse).
	holders atomic.Pointer[map[netip.Addr]string]
	base    string // http://<addr>[:port]
	token   string
	cmdline contract.Cmdline
	tracker *bootstage.Tracker
	dhcp    *dhcp.Server
	tftp    *tftp.Server
	handler http.Handler
	cluster *cluster
	// slurm is the head's Slurm part (Options.Slurm); nil without it.
	slurm *slurmPart
	// seen is the head's last DHCP exchange with each machine, which a
	// script request is held to (admit).
	seen dhcpSeen
	// exports is the set of nodes node1's NFS server exports to; nil when
	// the head exports nothing (ClusterRoot is not the machine's root).
	exports *exportSet
	// swarm is the swarm boot's state (swarm.go); nil without the RAM root.
	swarm *swarmPart
}

// New prepares the head: it picks the interface, gives it its address,
// prepares the state folder and creates the servers. Nothing listens until
// Serve, except the TFTP socket, which tftp.New binds at once. An Options
// value the head cannot work with is an *inputerr.Error.
func New(ctx context.Context, opts Options) (*Head, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &Head{opts: o, sys: o.System, log: o.Logger, tracker: bootstage.NewTracker()}
	if err := h.checkStateExport(); err != nil {
		return nil, err
	}

	if h.plan, err = h.planNetwork(ctx); err != nil {
		return nil, err
	}
	h.iface, h.addr = h.plan.iface, h.plan.addr.Addr()
	h.net.lease = h.plan.lease
	h.naming = contract.Naming{Subnet: h.plan.subnet(), Head: h.addr}
	if err := h.naming.Check(); err != nil {
		return nil, fmt.Errorf("cluster network: %w", err)
	}
	var tokenKept string
	if h.token, tokenKept, err = prepareState(o.StateDir); err != nil {
		return nil, optionError(InputStateDir, err)
	}
	if tokenKept != "" {
		h.log.Error("cluster token file was damaged: set aside, and a new token made; nodes that booted with the old token cannot register or heartbeat: boot them again",
			"file", filepath.Join(o.StateDir, contract.TokenFile), "kept_as", tokenKept)
	}
	h.warnMissingLoaders()
	h.cmdline = contract.Cmdline{Node: true, Head: h.addr, HTTPPort: uint16(o.HTTPPort), Token: h.token,
		Root: o.Root, Extra: strings.Fields(o.ExtraCmdline)}
	h.base = h.cmdline.HTTPBase()
	// Debian's signed GRUB finds this over TFTP; it names this head's
	// address, so it is written at every start.
	grubCfg := filepath.Join(o.StateDir, contract.TFTPDir, filepath.FromSlash(contract.GRUBNetConfig))
	if err := os.MkdirAll(filepath.Dir(grubCfg), 0o755); err != nil {
		return nil, optionError(InputStateDir, err)
	}
	// Unchanged, it is not rewritten: a restart on a full state folder
	// must not fail here.
	if cfg := []byte(GRUBNetConfig(h.cmdline)); !fileHolds(grubCfg, cfg) {
		if err := atomicfile.Write(grubCfg, cfg, 0o644); err != nil {
			return nil, optionError(InputStateDir, err)
		}
	}
	if o.Root == contract.RootRAM {
		if h.cmdline.Layers, err = Layers(o.BootDir); err != nil {
			return nil, optionErrorf(InputBootDir, "listing the image layers: %w", err)
		}
		h.setupSwarm()
	}

	// The boot-file trees. One policy for TFTP and HTTP: links may point
	// inside their folder, or into /boot, where Debian's ipxe.efi in
	// /usr/lib/ipxe links to.
	netbootFiles, err := bootfs.New([]string{o.BootDir}, bootLinkTargets...)
	if err != nil {
		return nil, optionError(InputBootDir, err)
	}
	ipxeFiles, err := bootfs.New([]string{o.IPXEDir}, bootLinkTargets...)
	if err != nil {
		return nil, optionError(InputIPXEDir, err)
	}
	// TFTP: the state folder's root first (the head's GRUB configuration,
	// and whatever an administrator puts there), then the boot folder (the
	// Secure Boot chain's shim and GRUB, built beside the kernel; its other
	// files are served over HTTP to anyone on the network anyway), then
	// iPXE's.
	tftpFiles, err := bootfs.New([]string{filepath.Join(o.StateDir, contract.TFTPDir), o.BootDir, o.IPXEDir}, bootLinkTargets...)
	if err != nil {
		return nil, optionError(InputStateDir, err)
	}

	h.handler, err = httpboot.NewHandler(httpboot.Config{
		Netboot:    netbootFiles,
		IPXE:       ipxeFiles,
		Script:     h.script,
		GRUBScript: h.grubScript,
		Tracker:    h.tracker,
		Logger:     h.log,
	})
	if err != nil {
		return nil, fmt.Errorf("http boot: %w", err)
	}
	if err := h.setupCluster(); err != nil {
		return nil, err
	}

	h.evidence = make(chan dhcp.Evidence, 16)
	h.dhcp, err = dhcp.New(dhcp.Config{
		Interface: h.iface,
		ServerIP:  h.addr,
		Subnet:    h.naming.Subnet,
		Mode:      h.plan.mode,
		Router:    h.plan.router,
		DNS:       h.plan.dns,
		LeaseFile: filepath.Join(o.StateDir, contract.LeasesFile),
		Known:     h.knownAddrs(),
		HTTPBase:  h.base,
		BootFiles: dhcp.BootFiles{BIOS: contract.BIOSBootFile, UEFI: contract.UEFIPXEBootFile, UEFIHTTP: contract.UEFIBootFile},
		Logger:    h.log,
		OnEvent:   h.dhcpEvent,
		InUse:     h.inUse,
		OnEvidence: func(ev dhcp.Evidence) {
			select {
			case h.evidence <- ev:
			default: // runNetwork acts on the first; the rest are in Evidence()
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("DHCP server (mode %s): %w", h.plan.mode, err)
	}

	h.tftp, err = tftp.New(tftp.Config{
		Files:     tftpFiles,
		Addr:      netip.AddrPortFrom(h.addr, 69).String(),
		Interface: h.iface,
		Logger:    h.log,
		OnRead:    h.tftpRead,
		Optional:  optionalLoaderFile,
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// Addr is the head's address on the cluster network.
func (h *Head) Addr() netip.Addr { return h.addr }

// Interface is the cluster interface.
func (h *Head) Interface() string { return h.iface }

// Tracker is the boot progress of every node.
func (h *Head) Tracker() *bootstage.Tracker { return h.tracker }

// Cmdline is the kernel command line nodes get.
func (h *Head) Cmdline() contract.Cmdline { return h.cmdline }

// Naming is the naming rule of the cluster network the head serves.
func (h *Head) Naming() contract.Naming { return h.naming }

// Run prepares the head and serves until ctx is done. When the cluster
// network moves to a LAN (another DHCP server showed up after the head
// started, or node1's lease moved), it starts the head again there.
func Run(ctx context.Context, opts Options) error {
	for {
		h, err := New(ctx, opts)
		if err != nil {
			return err
		}
		err = h.Serve(ctx)
		var mv *errMove
		if !errors.As(err, &mv) {
			return err
		}
		h.log.Warn("starting the head again on the LAN", "lease", mv.lease.String(), "why", mv.why)
		opts.adopt = &mv.lease
	}
}

// inUse reports whether a registered node other than mac holds ip
// (dhcp.Config.InUse): the registry still knows running nodes when the
// lease file was lost.
func (h *Head) inUse(ip netip.Addr, mac net.HardwareAddr) bool {
	m := h.holders.Load()
	if m == nil {
		return false
	}
	holder, ok := (*m)[ip]
	return ok && holder != contract.MACString(mac)
}

// Serve runs DHCP, TFTP and HTTP until ctx is done or one of them fails;
// then it stops the others and returns the first failure (nil on a clean
// stop).
func (h *Head) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The boot server listens on the cluster address only, so nodes reach it
	// and no other network does; and on loopback for the local status page.
	// Loopback is optional: something else may hold port 80 there.
	port := strconv.Itoa(h.opts.HTTPPort)
	main, err := net.Listen("tcp", net.JoinHostPort(h.addr.String(), port))
	if err != nil {
		h.tftpClose()
		return fmt.Errorf("HTTP boot server on %s: %w", net.JoinHostPort(h.addr.String(), port), err)
	}
	listeners := []net.Listener{main}
	if lo, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port)); err != nil {
		h.log.Warn("no HTTP on loopback; the status page is reachable on the cluster address only", "err", err)
	} else {
		listeners = append(listeners, lo)
	}
	srv := h.httpServer(httpguard.Limits{})

	var wg sync.WaitGroup
	var once sync.Once
	var first error
	fail := func(what string, err error) {
		if err != nil && ctx.Err() == nil {
			once.Do(func() { first = fmt.Errorf("%s: %w", what, err) })
		}
		cancel()
	}
	for _, l := range listeners {
		wg.Go(func() {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				fail("http", err)
			}
		})
	}
	wg.Go(func() { fail("tftp", h.tftp.Serve(ctx)) })
	wg.Go(func() { fail("dhcp", h.dhcp.Serve(ctx)) })
	wg.Go(func() { h.runCluster(ctx) })
	wg.Go(func() { h.runSlurm(ctx) })
	wg.Go(func() { fail("network", h.runNetwork(ctx, h.evidence)) })
	// Ready: node1's host certificate is in place for sshd, and nodes can
	// boot and register.
	agent.Notify("READY=1")
	wg.Go(func() {
		<-ctx.Done()
		// Let transfers of kernels and squashfs layers in progress finish,
		// but do not hold a shutdown for long.
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	})

	addrs := make([]string, len(listeners))
	for i, l := range listeners {
		addrs[i] = l.Addr().String()
	}
	h.log.Info("head serving", "iface", h.iface, "addr", h.addr, "subnet", h.naming.Subnet,
		"dhcp", h.opts.DHCP, "boot_dir", h.opts.BootDir, "state_dir", h.opts.StateDir,
		"http", strings.Join(addrs, ","), "tftp", h.tftp.Addr().String(), "root", h.opts.Root)
	h.log.Info("node kernel command line", "cmdline", h.cmdline.String())
	if h.opts.DHCP == dhcp.ModeOff {
		h.log.Warn("DHCP off: the iPXE scripts, which carry the cluster token, go to any machine that asks, since the head sees no DHCP exchange to hold them to")
	}
	wg.Wait()
	h.log.Info("head stopped")
	return first
}

// httpServer is the boot and API server, under limits that keep a slow
// or stalled client from holding a connection (internal/httpguard) while
// a slow but moving layer download runs to its end.
func (h *Head) httpServer(l httpguard.Limits) *http.Server {
	return l.Server(h.routes(), slog.NewLogLogger(h.log.Handler(), slog.LevelWarn))
}

// tftpClose releases the TFTP socket that tftp.New bound when Serve fails
// before serving: Serve on an already cancelled context closes it.
func (h *Head) tftpClose() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.tftp.Serve(ctx)
}

// dhcpEvent records what the DHCP server told a node. A node whose DHCP
// request already came from iPXE (the NIC's boot ROM is iPXE, as on QEMU and
// many servers) loads no iPXE over TFTP: that request is its proof that
// iPXE runs, so it is what marks the ipxe-loaded stage.
//
// Every event also counts as the machine's DHCP exchange with the head,
// which its script request is held to (admit). A proxy-mode REQUEST for the
// other server's address (dhcp.StageDHCPRequested) only tells the address:
// it is no boot stage of the head's.
func (h *Head) dhcpEvent(mac net.HardwareAddr, ip netip.Addr, stage, detail string) {
	h.seen.record(contract.MACString(mac), ip.Unmap(), stage, time.Now())
	if stage == dhcp.StageDHCPRequested {
		return
	}
	h.tracker.Mark(mac, ip, stage, detail)
	if stage == dhcp.StageDHCPOffered && strings.HasSuffix(detail, "(ipxe-script)") && h.needsIPXEMark(mac) {
		h.tracker.Mark(mac, ip, bootstage.IPXELoaded, "iPXE in the network card's boot ROM")
		h.log.Info("node runs iPXE from its network card's boot ROM", "mac", contract.MACString(mac))
	}
}

// needsIPXEMark reports whether the node's current boot has no ipxe-loaded
// stage yet.
func (h *Head) needsIPXEMark(mac net.HardwareAddr) bool {
	key := contract.MACString(mac)
	nodes := h.tracker.Nodes()
	i := slices.IndexFunc(nodes, func(n bootstage.Node) bool { return n.MAC == key })
	return i < 0 || needsIPXEMark(nodes[i].History)
}

// needsIPXEMark looks back through a node's history from before the iPXE
// offer just recorded (its last event): an ipxe-loaded means it is already
// marked (iPXE was chainloaded over TFTP, or an earlier offer marked it);
// a stage past ipxe-loaded, or a DHCP exchange with plain PXE firmware
// that was not followed by a TFTP load, means a new boot that iPXE in the
// boot ROM started.
func needsIPXEMark(hist []bootstage.Event) bool {
	for j := len(hist) - 2; j >= 0; j-- {
		e := hist[j]
		switch {
		case e.Stage == bootstage.IPXELoaded:
			return false
		case bootstage.StageIndex(e.Stage) > bootstage.StageIndex(bootstage.IPXELoaded):
			return true
		case strings.HasPrefix(e.Stage, "dhcp-") && !strings.HasSuffix(e.Detail, "(ipxe-script)"):
			return true
		}
	}
	return true
}

// tftpRead records a TFTP transfer (the TFTP server logs every read
// itself). A completed read of an iPXE boot loader means the node now runs
// iPXE; one of GRUB's network image, that shim on a UEFI PXE client took
// the Secure Boot chain.
func (h *Head) tftpRead(remote netip.Addr, file string, n int64, err error) {
	base := filepath.Base(file)
	if err != nil {
		return
	}
	stage, what := "", ""
	switch {
	case base == contract.BIOSBootFile || base == contract.UEFIBootFile || strings.HasPrefix(base, "ipxe"):
		stage, what = bootstage.IPXELoaded, "node loaded iPXE over TFTP"
	case file == contract.GRUBNetFile:
		stage, what = bootstage.GRUBLoaded, "node loaded Debian's signed GRUB through shim over TFTP"
	default:
		return
	}
	h.tracker.Mark(nil, remote, stage, "tftp "+file)
	mac := ""
	if hw := h.tracker.MAC(remote); hw != nil {
		mac = hw.String()
	}
	h.log.Info(what, "mac", mac, "ip", remote, "file", file, "bytes", n)
}

// optionalLoaderFile reports whether a TFTP file is one that shim or GRUB
// asks for in case it is there: shim's revocation lists and extra
// certificates beside it, GRUB's module lists and translations under its
// prefix. They are not found on every UEFI PXE boot, and that is no fault.
func optionalLoaderFile(file string) bool {
	base := path.Base(file)
	switch {
	case path.Dir(file) == "." && strings.HasSuffix(base, ".efi") &&
		(strings.HasPrefix(base, "revocations") || strings.HasPrefix(base, "shim_certificate")):
		return true
	case strings.HasPrefix(file, "grub/") && file != contract.GRUBNetConfig:
		return true
	}
	return false
}

// NewLogger returns the head's logger: text lines on w (standard error,
// which systemd sends to the journal). Under systemd the journal stamps
// every line itself, so the time is left out there.
func NewLogger(w io.Writer, level slog.Level) *slog.Logger {
	journal := os.Getenv("JOURNAL_STREAM") != ""
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if journal && len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}
