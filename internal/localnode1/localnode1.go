// Package localnode1 turns an installed Debian machine into a permanent
// node1: the head daemon runs there as a systemd service, serves the netboot
// files of a `clusterdebian build` to the other machines, and shares /home
// with them, while the host keeps its own host name, root file system and
// network. Everything it changes is written down in a record first, so that
// Remove undoes exactly that (packages excepted) and a second run finds
// nothing to do.
//
// Safety comes first, because a mistake here breaks a machine that has to
// keep working: nodes get the RAM root by default (the host's root is never
// exported unless asked), the interface that leads to the outside is refused
// (a DHCP server there would disturb the whole LAN), and the plan is shown
// before anything changes.
package localnode1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"

	"github.com/clusterdebian/clusterdebian/imagefiles"
	"github.com/clusterdebian/clusterdebian/internal/clusterfiles"
	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

// Where localnode1 puts things on the host.
const (
	StateDir    = head.DefaultStateDir
	RecordPath  = StateDir + "/localnode1.json"
	BackupDir   = StateDir + "/localnode1-backup"
	BootDir     = StateDir + "/boot"
	BinaryPath  = "/usr/local/bin/clusterdebian"
	ConfigPath  = "/etc/clusterdebian/cluster.toml"
	ServiceName = "clusterdebian-head.service"
	UnitPath    = "/etc/systemd/system/" + ServiceName
	// ExportsPath is the head's exports file: the head writes it, one line
	// per node that booted from it; localnode1 records it, so that
	// --remove takes it away.
	ExportsPath = head.ExportsFile
	// SSHConfigPath is the ssh client drop-in the head writes for the
	// cluster subnet (sshtrust.ClientConfig).
	SSHConfigPath = "/" + sshtrust.ClientConfigPath
	// SSHDConfigPath has sshd present the certificate the head makes for
	// the host's own ed25519 key (head.InstalledHostCert), so that nodes
	// verify the host as they verify each other.
	SSHDConfigPath = "/etc/ssh/sshd_config.d/clusterdebian-localnode1.conf"
	nfsServer      = "nfs-server.service"
)

// headPackages are what the head needs on the host besides the parallel
// stack: the NFS server for /home, iPXE for plain PXE firmware, ip(8), and
// OpenSSH for the cluster's ssh trust.
var headPackages = []string{"nfs-kernel-server", "nfs-common", "ipxe", "iproute2", "openssh-server", "openssh-client", "iputils-ping"}

// Packages returns the Debian packages a localnode1 host needs for cfg.
func Packages(cfg *config.Config) []string {
	pkgs := append(slices.Clone(headPackages), imagebuild.DevelopmentPackages(cfg)...)
	slices.Sort(pkgs)
	return slices.Compact(pkgs)
}

// Netboot files a build makes (imagebuild's names); the kernel and the
// initrds are required.
var requiredBootFiles = []string{contract.KernelFile, contract.InitrdFile}

// The inputs of MakePlan and Apply, as their errors and warnings name them
// (each is an *inputerr.Error); the CLI maps them to its flags. Errors
// about the host's cluster.toml name its keys.
const (
	InputInterface  = "interface"      // Options.Interface
	InputFrom       = "netboot folder" // Options.From
	InputSharedRoot = "shared root"    // Options.SharedRoot
)

// Refusals that Options.Force gets past, and states that Remove clears;
// the errors wrap them.
var (
	// ErrDefaultRoute: the interface carries the host's default route.
	ErrDefaultRoute = errors.New("this host's default route goes through it")
	// ErrIfupdownStanza: /etc/network/interfaces configures the interface.
	ErrIfupdownStanza = errors.New("configured in /etc/network/interfaces already")
	// ErrOtherInterface: the host is node1 on another interface already.
	ErrOtherInterface = errors.New("this host is node1 already")
	// ErrPartial: Apply stopped halfway; the record says what was done.
	ErrPartial = errors.New("the setup stopped halfway")
)

// Options say what to set up.
type Options struct {
	// Interface is the cluster network interface.
	Interface string
	// Config is the cluster's configuration (the build's cluster.toml).
	Config *config.Config
	// From is the folder with the netboot files: a build's output folder
	// or its netboot/ folder.
	From string
	// DHCP overrides network.dhcp when set.
	DHCP string
	// SharedRoot exports the host's root to the nodes (nodes.root =
	// "shared"). Dangerous on an installed system.
	SharedRoot bool
	// Force allows the interface of the default route, and one configured
	// in /etc/network/interfaces.
	Force bool
	// Binary is the clusterdebian binary installed as BinaryPath.
	Binary string
}

// Change is one step of a plan.
type Change struct {
	// Summary says what the step does, for the plan shown to the user.
	Summary string
	apply   func(ctx context.Context, r *Record) error
}

// Plan is what Apply would change. An empty Changes means the host is set
// up already.
type Plan struct {
	Interface string
	Address   netip.Prefix
	Root      contract.RootMode // the nodes' root: ram or shared
	DHCP      string
	Network   string // the tool that configures the interface
	BootDir   string
	Packages  []string // to install
	// Warnings are what the user should know before going ahead; those
	// about one input are *inputerr.Error.
	Warnings []error
	Changes  []Change

	sys  *System
	opts Options
	cfg  *config.Config // the host's cluster.toml
}

// MakePlan looks at the host and returns what Apply would change, or an
// error when the setup is refused, naming the input to change (see the
// Input constants) or the host's cluster.toml key.
func MakePlan(ctx context.Context, sys *System, o Options) (*Plan, error) {
	if o.Config == nil {
		o.Config = config.Default()
	}
	p := &Plan{sys: sys, opts: o, Interface: o.Interface, BootDir: BootDir}
	if err := p.checkInterface(); err != nil {
		return nil, err
	}
	from, err := netbootDir(o.From)
	if err != nil {
		return nil, err
	}
	p.opts.From = from

	// The host's config: the build's, with this host's interface, boot
	// folder and root mode. Passwords are left out (ForImage), as in an image.
	cfg := *o.Config
	cfg.Network.Interface = o.Interface
	if o.DHCP != "" {
		cfg.Network.DHCP = o.DHCP
	}
	cfg.Head.BootDir = BootDir
	cfg.Head.StateDir = StateDir
	cfg.Nodes.Root = contract.RootRAM
	if o.SharedRoot {
		cfg.Nodes.Root = contract.RootShared
		p.Warnings = append(p.Warnings, inputerr.Errorf(InputSharedRoot, "", "the nodes will mount this host's root file system read-write over NFS: "+
			"root on any node can change or break this host; the RAM root is the safe choice"))
	}
	if err := cfg.Validate(); err != nil {
		// The file was valid when loaded: the interface or DHCP mode given
		// here are what is wrong, and the errors name their keys.
		return nil, fmt.Errorf("this host's cluster.toml: %w", err)
	}
	if cfg.Nodes.Root == contract.RootRAM {
		if _, err := os.Stat(filepath.Join(from, contract.BaseLayer)); err != nil {
			return nil, inputerr.Errorf(InputFrom, from, "no %s, which nodes with the RAM root fetch", contract.BaseLayer)
		}
	}
	p.cfg = &cfg
	p.Root, p.DHCP = cfg.Nodes.Root, cfg.Network.DHCP
	subnet := cfg.Subnet()
	p.Address = netip.PrefixFrom(subnet.Addr().Next(), subnet.Bits())
	if err := p.checkAddresses(); err != nil {
		return nil, err
	}
	p.Network = sys.detectNetwork(ctx)
	if err := p.checkNetwork(); err != nil {
		return nil, err
	}
	p.checkUsers()
	if err := p.checkStateFileSystem(); err != nil {
		return nil, err
	}

	for _, pkg := range Packages(&cfg) {
		if !sys.installed(ctx, pkg) {
			p.Packages = append(p.Packages, pkg)
		}
	}
	if len(p.Packages) > 0 {
		p.add("install packages: "+strings.Join(p.Packages, " "), p.installPackages)
	}
	return p, p.planFiles(ctx)
}

// checkInterface refuses interfaces that must not serve the cluster.
func (p *Plan) checkInterface() error {
	iface := p.Interface
	if iface == "" {
		return inputerr.Errorf(InputInterface, "", "name the cluster network interface (the one on the cluster switch; see ip link)")
	}
	if iface == "lo" {
		return inputerr.Errorf(InputInterface, iface, "the loopback interface reaches no other machine")
	}
	if _, err := p.sys.Addrs(iface); err != nil {
		return inputerr.New(InputInterface, iface, err)
	}
	routes, err := p.sys.DefaultRoutes()
	if err != nil {
		return fmt.Errorf("reading the routing table: %w", err)
	}
	if slices.Contains(routes, iface) {
		const why = "%w: it is how this host reaches the outside, " +
			"and the head would serve DHCP and network boot on that network, to every machine on it"
		if !p.opts.Force {
			return inputerr.Errorf(InputInterface, iface, why+"; use a second network card for the cluster", ErrDefaultRoute)
		}
		p.Warnings = append(p.Warnings, inputerr.Errorf(InputInterface, iface, why+" (forced)", ErrDefaultRoute))
	}
	return nil
}

// checkAddresses looks at what the interface has: another address in the
// cluster subnet would confuse the head, which takes the first it finds.
func (p *Plan) checkAddresses() error {
	addrs, err := p.sys.Addrs(p.Interface)
	if err != nil {
		return inputerr.New(InputInterface, p.Interface, err)
	}
	var others []netip.Prefix
	for _, a := range addrs {
		switch {
		case a == p.Address:
		case p.cfg.Subnet().Contains(a.Addr()):
			return inputerr.Errorf(InputInterface, p.Interface, "has %s in the cluster subnet %s, and node1 must be %s: remove it (ip addr del %s dev %s) or choose another network.subnet",
				a, p.cfg.Subnet(), p.Address.Addr(), a, p.Interface)
		default:
			others = append(others, a)
		}
	}
	if len(others) > 0 {
		p.Warnings = append(p.Warnings, fmt.Errorf("%s also has %s: is it really the private cluster network?", p.Interface, joinPrefixes(others)))
	}
	return nil
}

// checkNetwork makes sure the interface configuration can be written where
// the network tool reads it, and does not fight one already there.
func (p *Plan) checkNetwork() error {
	if p.Network != NetIfupdown {
		if p.Network == NetNone {
			p.Warnings = append(p.Warnings, errors.New("no NetworkManager, systemd-networkd or ifupdown configures this host's network: the head adds "+p.Address.String()+" at each start"))
		}
		return nil
	}
	data, _, err := p.sys.read("/etc/network/interfaces")
	if err != nil {
		return err
	}
	if !ifupdownSources(string(data)) {
		p.Warnings = append(p.Warnings, errors.New("/etc/network/interfaces does not read interfaces.d: the head adds "+p.Address.String()+" at each start instead"))
		p.Network = NetNone
		return nil
	}
	if ifupdownConfigures(string(data), p.Interface) && !p.opts.Force {
		return inputerr.Errorf(InputInterface, p.Interface, "%w: take its stanza out first", ErrIfupdownStanza)
	}
	return nil
}

// checkStateFileSystem refuses --shared-root while the head's state folder
// is on the root file system that the nodes would mount: the SSH CA key and
// the cluster token in it would be readable over NFS, and the head refuses
// to start that way (head.StateExposed). An export does not cross into
// another mounted file system, so a partition or logical volume mounted on
// the state folder keeps them out; a bind mount of the folder onto itself
// does not (the NFS server looks names up in the exported file system
// under any mount).
func (p *Plan) checkStateFileSystem() error {
	if p.Root != contract.RootShared {
		return nil
	}
	exposed, err := head.StateExposed(p.sys.path(StateDir), p.sys.path("/"), p.sys.fileSystemID)
	if err != nil {
		return fmt.Errorf("--shared-root: checking where %s is: %w", StateDir, err)
	}
	if exposed {
		return fmt.Errorf("--shared-root exports this host's root file system to the nodes, and %s (the cluster's SSH CA key and token) is on it, so every node could read them: "+
			"mount a file system of its own on %s first (a partition or logical volume, in /etc/fstab), or use the RAM root (leave out --shared-root)", StateDir, StateDir)
	}
	return nil
}

// checkUsers warns about the image's users without an account here: the
// nodes share this host's /home, and uids must match.
func (p *Plan) checkUsers() {
	if p.cfg.Nodes.Root != contract.RootRAM {
		return
	}
	passwd, _, _ := p.sys.read("/etc/passwd")
	for _, u := range p.cfg.Users {
		if !regexpHasUser(string(passwd), u.Name) {
			p.Warnings = append(p.Warnings, fmt.Errorf("user %s of the image has no account on this host: nodes share this host's /home, so its home there will be missing (adduser %s, with the same uid as in the image)", u.Name, u.Name))
		}
	}
}

func regexpHasUser(passwd, name string) bool {
	for _, l := range strings.Split(passwd, "\n") {
		if strings.HasPrefix(l, name+":") {
			return true
		}
	}
	return false
}

// netbootDir finds the netboot files in from (a build's output folder or
// its netboot/ folder).
func netbootDir(from string) (string, error) {
	if from == "" {
		return "", inputerr.Errorf(InputFrom, "", "name the output folder of clusterdebian build (it has netboot/)")
	}
	abs, err := filepath.Abs(from)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(filepath.Join(abs, imagebuild.NetbootDir)); err == nil && fi.IsDir() {
		abs = filepath.Join(abs, imagebuild.NetbootDir)
	}
	for _, f := range requiredBootFiles {
		if _, err := os.Stat(filepath.Join(abs, f)); err != nil {
			return "", inputerr.Errorf(InputFrom, from, "no %s: name the output folder of clusterdebian build", f)
		}
	}
	return abs, nil
}

func (p *Plan) add(summary string, apply func(context.Context, *Record) error) {
	p.Changes = append(p.Changes, Change{Summary: summary, apply: apply})
}

// wanted is a file localnode1 writes.
type wanted struct {
	path string
	data []byte
	mode fs.FileMode
}

// files returns every file localnode1 writes, with its content.
func (p *Plan) files() ([]wanted, error) {
	bin, err := os.ReadFile(p.opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("the clusterdebian binary to install: %w", err)
	}
	unit, err := unitFile(p.Interface)
	if err != nil {
		return nil, err
	}
	ws := []wanted{
		{BinaryPath, bin, 0o755},
		{ConfigPath, []byte(hostConfig(p.cfg)), 0o644},
		{UnitPath, []byte(unit), 0o644},
		{SSHDConfigPath, []byte(sshdConfig), 0o644},
	}
	if path := netConfigPath(p.Network, p.Interface); path != "" {
		data, mode := netConfig(p.Network, p.Interface, p.Address)
		ws = append(ws, wanted{path, []byte(data), fs.FileMode(mode)})
	}
	return ws, nil
}

// hostConfig is the host's cluster.toml, which the head reads.
func hostConfig(cfg *config.Config) string {
	return "# Written by clusterdebian localnode1 for this host's head daemon; removed by --remove.\n" + cfg.ForImage()
}

// unitFile runs the head at boot: imagefiles' localnode1-head.service.tmpl.
// Unlike the live image's unit it has no boot=live condition: this host is
// node1 however it boots.
func unitFile(iface string) (string, error) {
	t, err := template.New("unit").Parse(imagefiles.Template("localnode1-head.service.tmpl"))
	if err != nil {
		return "", err
	}
	var b strings.Builder
	err = t.Execute(&b, map[string]string{"Interface": iface, "Binary": BinaryPath, "Config": ConfigPath})
	return b.String(), err
}

// sshdConfig is SSHDConfigPath's content. sshd starts without the
// certificate, which the head makes at its first start and then has sshd
// reload.
const sshdConfig = `# Written by clusterdebian localnode1; removed by --remove.
# The cluster's SSH CA certifies this host's own key (the head writes the
# certificate), so the nodes verify this host as node1.
HostCertificate /` + head.InstalledHostCert + `
`

// planFiles adds the file, boot file and service changes.
func (p *Plan) planFiles(ctx context.Context) error {
	sys := p.sys
	ws, err := p.files()
	if err != nil {
		return err
	}
	restart := false // the running head must pick up a change
	for _, w := range ws {
		old, exists, err := sys.read(w.path)
		if err != nil {
			return err
		}
		if exists && bytes.Equal(old, w.data) && modeOf(sys.path(w.path)) == w.mode {
			continue
		}
		verb := "write"
		if exists {
			verb = "replace"
		}
		p.add(verb+" "+w.path, func(ctx context.Context, r *Record) error {
			if err := sys.mkdirs(r, filepath.Dir(w.path)); err != nil {
				return err
			}
			if err := sys.track(r, w.path); err != nil {
				return err
			}
			if err := sys.write(w.path, w.data, w.mode); err != nil {
				return err
			}
			return os.Chmod(sys.path(w.path), w.mode)
		})
		switch w.path {
		case BinaryPath, ConfigPath, UnitPath:
			restart = true
		case netConfigPath(p.Network, p.Interface):
			p.add(fmt.Sprintf("configure %s with %s (%s)", p.Interface, p.Address, p.Network), func(ctx context.Context, _ *Record) error {
				return sys.netUp(ctx, p.Network, p.Interface)
			})
		}
	}
	copies, stale, err := syncPlan(p.opts.From, sys.path(BootDir))
	if err != nil {
		return err
	}
	if len(copies)+len(stale) > 0 {
		restart = true
		summary := "copy the netboot files from " + p.opts.From + " to " + BootDir + ": " + strings.Join(copies, " ")
		if len(stale) > 0 {
			summary += "; remove " + strings.Join(stale, " ")
		}
		p.add(summary, func(ctx context.Context, r *Record) error {
			if err := sys.mkdirs(r, BootDir); err != nil {
				return err
			}
			return syncFiles(p.opts.From, sys.path(BootDir), copies, stale)
		})
	}
	// The record's own folder and the cluster files the head will write
	// are recorded before the head first runs.
	p.add("", p.recordHeadFiles)

	if !sys.unitEnabled(ctx, nfsServer) || !sys.unitActive(ctx, nfsServer) {
		p.add("enable and start "+nfsServer, func(ctx context.Context, r *Record) error {
			if err := p.enable(ctx, r, nfsServer); err != nil {
				return err
			}
			_, err := sys.Run(ctx, "systemctl", "start", nfsServer)
			return err
		})
	}
	switch {
	case !sys.unitEnabled(ctx, ServiceName) || !sys.unitActive(ctx, ServiceName):
		p.add("enable and start "+ServiceName+" (the head daemon, at every boot)", func(ctx context.Context, r *Record) error {
			if err := p.enable(ctx, r, ServiceName); err != nil {
				return err
			}
			// restart, not start: a head that runs but was disabled by
			// hand takes the new files too.
			_, err := sys.Run(ctx, "systemctl", "restart", ServiceName)
			return err
		})
	case restart:
		p.add("restart "+ServiceName, func(ctx context.Context, _ *Record) error {
			if _, err := sys.Run(ctx, "systemctl", "daemon-reload"); err != nil {
				return err
			}
			_, err := sys.Run(ctx, "systemctl", "restart", ServiceName)
			return err
		})
	}
	// The bookkeeping step alone is no change.
	if len(p.Changes) == 1 && p.Changes[0].Summary == "" {
		p.Changes = nil
	}
	return nil
}

func modeOf(path string) fs.FileMode {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Mode().Perm()
}

// enable enables unit (the caller starts it), recording it when it was not enabled.
func (p *Plan) enable(ctx context.Context, r *Record, unit string) error {
	sys := p.sys
	if !sys.unitEnabled(ctx, unit) && !slices.Contains(r.Enabled, unit) {
		r.Enabled = append(r.Enabled, unit)
		if err := sys.saveRecord(r); err != nil {
			return err
		}
	}
	if _, err := sys.Run(ctx, "systemctl", "daemon-reload"); err != nil {
		return err
	}
	_, err := sys.Run(ctx, "systemctl", "enable", unit)
	return err
}

// recordHeadFiles records the files the head daemon will write on this
// host, with a copy of those that belong to packages (Open MPI's default
// hostfiles and parameter files), so that --remove puts them back: also
// its exports (one line per node that booted from it) and its ssh client
// drop-in (for the cluster subnet).
func (p *Plan) recordHeadFiles(ctx context.Context, r *Record) error {
	for _, f := range []string{"/" + clusterfiles.OpenMPIDefaultPath, "/" + clusterfiles.PRRTEDefaultPath,
		"/" + clusterfiles.OpenMPIParamsPath, "/" + clusterfiles.PRRTEParamsPath, ExportsPath, SSHConfigPath} {
		if err := p.sys.track(r, f); err != nil {
			return err
		}
	}
	for _, f := range []string{"/etc/ssh/ssh_known_hosts"} {
		if !p.sys.exists(f) && !slices.Contains(r.Absent, f) {
			r.Absent = append(r.Absent, f)
		}
	}
	for _, d := range []string{"/etc/cluster", contract.RunDir, filepath.Dir(ExportsPath), filepath.Dir(SSHConfigPath)} {
		if !p.sys.exists(d) && !slices.Contains(r.Dirs, d) {
			r.Dirs = append(r.Dirs, d)
		}
	}
	return p.sys.saveRecord(r)
}

// installPackages runs apt-get; the packages stay when the setup is removed.
func (p *Plan) installPackages(ctx context.Context, r *Record) error {
	r.Packages = append(r.Packages, p.Packages...)
	if err := p.sys.saveRecord(r); err != nil {
		return err
	}
	if _, err := p.sys.Run(ctx, "apt-get", "update"); err != nil {
		return err
	}
	args := append([]string{"install", "-y", "--no-install-recommends"}, p.Packages...)
	_, err := p.sys.Run(ctx, "apt-get", args...)
	return err
}

// Describe writes the plan for the user.
func (p *Plan) Describe(w io.Writer) {
	fmt.Fprintf(w, "localnode1: this host becomes node1 (%s on %s), nodes.root = %q, DHCP %s; it keeps its host name and root file system\n",
		p.Address, p.Interface, p.Root, p.DHCP)
	for _, warn := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	if len(p.Changes) == 0 {
		fmt.Fprintln(w, "no changes: this host is set up as node1 already")
		return
	}
	fmt.Fprintln(w, "plan:")
	for _, c := range p.Changes {
		if c.Summary != "" {
			fmt.Fprintf(w, "  - %s\n", c.Summary)
		}
	}
	fmt.Fprintf(w, "what is changed is recorded in %s, so that it can be undone (packages stay)\n", RecordPath)
}

// Apply carries the plan out, step by step, recording each change before
// it is made.
func (p *Plan) Apply(ctx context.Context) error {
	sys := p.sys
	r, err := sys.loadRecord()
	if err != nil {
		return err
	}
	if r == nil {
		r = &Record{Version: recordVersion}
	}
	if r.Interface != "" && r.Interface != p.Interface {
		return inputerr.Errorf(InputInterface, p.Interface, "%w, on %s; remove that setup first", ErrOtherInterface, r.Interface)
	}
	r.Interface, r.Address, r.Network = p.Interface, p.Address.String(), p.Network
	// The state folder first: the record lives in it.
	if err := sys.mkdirs(r, StateDir); err != nil {
		return err
	}
	if err := sys.saveRecord(r); err != nil {
		return err
	}
	for _, c := range p.Changes {
		if c.Summary != "" {
			sys.logf("%s", c.Summary)
		}
		if err := c.apply(ctx, r); err != nil {
			if c.Summary == "" {
				return err
			}
			return fmt.Errorf("%s: %w (%w: what was done so far is recorded in %s)", c.Summary, err, ErrPartial, RecordPath)
		}
	}
	return nil
}

// Installed reports whether this host was set up with localnode1 (it has
// the record): such a node1 is a machine that stays up, which shutdown
// leaves on unless told otherwise.
func Installed() bool {
	_, err := os.Stat(RecordPath)
	return err == nil
}
