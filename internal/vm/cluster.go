package vm

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clusterdebian/clusterdebian/internal/hosttools"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/netns"
)

// A virtual cluster is node1 booting the ISO and N more VMs booting from it
// over the network, on a bridge inside a network namespace of its own
// ("cdvm-<name>"), so that node1's DHCP server answers the VMs and nothing
// else: no packet leaves the namespace, and no interface of the host is
// touched. QEMU runs detached, so the cluster outlives `clusterdebian vm up`;
// state.json in the cluster's folder says what runs, for the other commands.

// Defaults and limits of UpOptions.
const (
	DefaultName          = "default"
	DefaultHeadMemoryMiB = 2048 // the live head keeps its root (the squashfs layers' upper layer) in RAM
	DefaultNodeMemoryMiB = 1536
	MinHeadMemoryMiB     = 1024
	MinNodeMemoryMiB     = 512
	// MaxNodes keeps VM indices (node1 is 1) within one MAC byte and within
	// a /24's usable addresses.
	MaxNodes = 250
	// DiskSize is the size of each node's empty disk. The disk is sparse
	// (qcow2), so it costs nothing until a node writes to it.
	DiskSize = "8G"
)

// UpOptions configure Up. Zero values take the defaults.
type UpOptions struct {
	Name  string // cluster name; default "default"
	ISO   string // the ClusterDebian ISO node1 boots
	Nodes int    // VMs besides node1
	// Later of the Nodes (the last ones) are made but left off: Up does
	// not start them or wait for them, and Start powers each on, for tests
	// that boot nodes one after another.
	Later int
	// OneByOne powers the nodes on one after another, each once the one
	// before it joined, as people switch on a room's PCs down a row:
	// with the swarm, each node can fetch its layers from the ones up.
	OneByOne      bool
	Accel         string // "tcg" (default) or "kvm"
	MemoryMiB     int    // node1's memory; default 2048
	NodeMemoryMiB int    // each node's; default 1536
	CPUs          int    // per VM; default 1
	// SecureBoot boots every VM with UEFI and Secure Boot on, with the keys
	// PCs ship with (Microsoft's, in Debian's OVMF build for it): node1
	// from the ISO as a USB stick, through Debian's signed shim, GRUB and
	// kernel; the nodes with the firmware's own PXE client (their network
	// cards have no iPXE ROM, which Secure Boot would refuse), through the
	// same chain that node1 serves. Without it every VM boots SeaBIOS:
	// node1 from the ISO as a CD, the nodes with the cards' iPXE ROM.
	SecureBoot bool
	// Display gives node1 a VGA card, as a PC's screen: with no window,
	// QEMU's monitor types on its keyboard and takes screendumps (see
	// Cluster.Machine), for an image with a desktop (image.desktop). The
	// serial console stays as it is.
	Display bool
	// Progress receives a line per boot milestone; nil discards them.
	Progress io.Writer
	// BootTimeout bounds node1's boot to its login prompt, and then the
	// nodes' joining; default 20 minutes (TCG on a small host is slow).
	BootTimeout time.Duration
	// Attached makes the VMs die with this process, however it ends,
	// instead of outliving it: for tests, whose timeout kills the test
	// binary without running its cleanup. The returned Cluster keeps
	// starting its VMs attached (Start); a Cluster loaded by another
	// process does not. The rooms' servers (LAN, Uplink) die with it too.
	Attached bool
	// LAN, a subnet such as DefaultLAN (IPv4, /8 to /24), puts the cluster
	// on a LAN that has its own router, DHCP and DNS server (see room.go);
	// empty: a private switch where node1 is alone.
	LAN string
	// Uplink gives node1 a second NIC, on an uplink network with its own
	// router, DHCP and DNS server: the nodes' way out (see room.go).
	Uplink bool
	// OnNetwork, when set, runs once the cluster's network and its rooms
	// exist and before any VM starts, for tests that watch the wire from
	// the first packet. Its error stops Up, which then removes the cluster.
	OnNetwork func(*Cluster) error
}

// The inputs of Up and LoadCluster, as their errors name them (each such
// error is an *inputerr.Error); the CLI maps them to its flags.
const (
	InputName       = "cluster name" // UpOptions.Name, LoadCluster's name
	InputISO        = "ISO"          // UpOptions.ISO
	InputNodes      = "node count"   // UpOptions.Nodes
	InputAccel      = "accelerator"  // UpOptions.Accel
	InputMemory     = "node1 memory" // UpOptions.MemoryMiB
	InputNodeMemory = "node memory"  // UpOptions.NodeMemoryMiB
	InputCPUs       = "CPUs"         // UpOptions.CPUs
	InputLAN        = "LAN subnet"   // UpOptions.LAN
)

// Errors about a cluster's state, which the CLI explains with the command
// that gets past them. They are wrapped with the cluster's details.
var (
	// ErrNoCluster: LoadCluster found no cluster of that name.
	ErrNoCluster = errors.New("no such virtual cluster")
	// ErrAlreadyUp: Up found the cluster running.
	ErrAlreadyUp = errors.New("the cluster is already up")
	// ErrLeftover: Up found remains of the cluster (a damaged state, a
	// network namespace, a folder) that Down removes.
	ErrLeftover = errors.New("remains of the cluster are in the way")
	// ErrNoVM: the cluster has no VM or node of that name.
	ErrNoVM = errors.New("no such VM")
	// ErrNetNSGone: the cluster's network namespace is gone (the host
	// rebooted); only Down and Up again help.
	ErrNetNSGone = errors.New("the cluster's network namespace is gone")
)

// StoppedError says that a VM is not running, for what needs it running.
type StoppedError struct{ VM string }

func (e *StoppedError) Error() string { return e.VM + " is stopped" }

var nameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,31}$`)

// CheckName rejects cluster names that would not make a clean namespace
// name or folder.
func CheckName(name string) error {
	if !nameRe.MatchString(name) {
		return inputerr.Errorf(InputName, strconv.Quote(name), "use 1 to 32 letters, digits, - or _, starting with a letter or digit")
	}
	return nil
}

// validate fills in defaults and checks the options before anything is
// created; it names each wrong input (see the Input constants).
func (o *UpOptions) validate() error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Accel == "" {
		o.Accel = "tcg"
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = DefaultHeadMemoryMiB
	}
	if o.NodeMemoryMiB == 0 {
		o.NodeMemoryMiB = DefaultNodeMemoryMiB
	}
	if o.CPUs == 0 {
		o.CPUs = 1
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 20 * time.Minute
	}
	var errs []error
	if err := CheckName(o.Name); err != nil {
		errs = append(errs, err)
	}
	switch {
	case o.ISO == "":
		errs = append(errs, inputerr.Errorf(InputISO, "", "give the ClusterDebian ISO node1 boots (clusterdebian build makes out/clusterdebian.iso)"))
	default:
		if abs, err := filepath.Abs(o.ISO); err == nil {
			o.ISO = abs
		}
		fi, err := os.Stat(o.ISO)
		switch {
		case notFound(err):
			errs = append(errs, inputerr.Errorf(InputISO, o.ISO, "no such file"))
		case err != nil:
			errs = append(errs, inputerr.New(InputISO, o.ISO, err))
		case !fi.Mode().IsRegular():
			errs = append(errs, inputerr.Errorf(InputISO, o.ISO, "not a regular file"))
		}
	}
	if o.Nodes < 0 || o.Nodes > MaxNodes {
		errs = append(errs, inputerr.Errorf(InputNodes, strconv.Itoa(o.Nodes), "give 0 to %d nodes besides node1", MaxNodes))
	}
	if o.Nodes >= 0 && (o.Later < 0 || o.Later > o.Nodes) {
		errs = append(errs, inputerr.Errorf(InputNodes, strconv.Itoa(o.Later), "the nodes left off (Later) must be 0 to the node count, %d", o.Nodes))
	}
	switch o.Accel {
	case "tcg":
	case "kvm":
		if err := unix.Access("/dev/kvm", unix.R_OK|unix.W_OK); err != nil {
			errs = append(errs, inputerr.Errorf(InputAccel, "kvm", "/dev/kvm is not usable (%v); use tcg", err))
		}
	default:
		errs = append(errs, inputerr.Errorf(InputAccel, strconv.Quote(o.Accel), "use tcg or kvm"))
	}
	if o.MemoryMiB < MinHeadMemoryMiB {
		errs = append(errs, inputerr.Errorf(InputMemory, strconv.Itoa(o.MemoryMiB), "node1 needs at least %d MiB (it keeps its live root in RAM); the default is %d", MinHeadMemoryMiB, DefaultHeadMemoryMiB))
	}
	if o.NodeMemoryMiB < MinNodeMemoryMiB {
		errs = append(errs, inputerr.Errorf(InputNodeMemory, strconv.Itoa(o.NodeMemoryMiB), "a node needs at least %d MiB; the default is %d", MinNodeMemoryMiB, DefaultNodeMemoryMiB))
	}
	if o.CPUs < 1 || o.CPUs > 64 {
		errs = append(errs, inputerr.Errorf(InputCPUs, strconv.Itoa(o.CPUs), "give 1 to 64"))
	}
	switch {
	case o.LAN != "" && o.Uplink:
		// Another DHCP server on both of node1's NICs: the head cannot tell
		// the cluster's card (it asks to choose at boot), and the nodes
		// would never join.
		errs = append(errs, inputerr.Errorf(InputLAN, o.LAN, "give the LAN or the uplink, not both: with a DHCP server on both of node1's NICs the head asks at boot which card is the cluster's"))
	case o.LAN != "":
		if _, err := checkLAN(o.LAN); err != nil {
			errs = append(errs, inputerr.New(InputLAN, o.LAN, err))
		}
	}
	return errors.Join(errs...)
}

// clusterByte is the fifth byte of the cluster's MACs, from its name, so that
// MACs stay the same from one `vm up` to the next (node1's leases and the
// node names they give stay put) and differ between clusters.
func clusterByte(name string) byte {
	h := fnv.New32a()
	h.Write([]byte(name))
	return byte(h.Sum32())
}

// MAC is the address of the VM with index i (node1 is 1) of cluster name.
// 52:54:00 is QEMU's prefix; cd marks ClusterDebian.
func MAC(name string, i int) string {
	return fmt.Sprintf("52:54:00:cd:%02x:%02x", clusterByte(name), i)
}

// Cluster is a virtual cluster, as its state file describes it.
type Cluster struct {
	State
	Dir string // its state folder

	// hostname asks a VM's guest agent for its host name; a field so that
	// tests can answer without VMs.
	hostname func(ctx context.Context, v VMState) (string, error)
	// attached: its VMs die with this process (UpOptions.Attached).
	attached bool
}

func newCluster(dir string, st *State) *Cluster {
	return &Cluster{State: *st, Dir: dir, hostname: func(ctx context.Context, v VMState) (string, error) {
		return QGAHostname(ctx, filepath.Join(v.Dir, QGASocket))
	}}
}

// LoadCluster reads the state of the cluster name. For a cluster that has
// no state the error wraps ErrNoCluster and lists the clusters that exist.
func LoadCluster(name string) (*Cluster, error) {
	if name == "" {
		name = DefaultName
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	dir := ClusterDir(name)
	st, err := ReadState(dir)
	if notFound(err) {
		hint := ""
		if others := Clusters(); len(others) > 0 {
			hint = "; clusters that exist: " + strings.Join(others, ", ")
		}
		return nil, fmt.Errorf("%w %q (no %s)%s", ErrNoCluster, name, filepath.Join(dir, StateFile), hint)
	}
	if err != nil {
		return nil, err
	}
	return newCluster(dir, st), nil
}

// Clusters lists the names of the clusters that have a state folder.
func Clusters() []string {
	entries, _ := os.ReadDir(StateRoot)
	var names []string
	for _, e := range entries {
		if e.IsDir() && CheckName(e.Name()) == nil {
			if _, err := os.Stat(filepath.Join(StateRoot, e.Name(), StateFile)); err == nil {
				names = append(names, e.Name())
			}
		}
	}
	return names
}

// Running reports whether v's QEMU runs.
func (v VMState) Running() bool { return qemuAlive(v.PID, v.Dir) }

// Serial returns everything the VM has written to its serial console since
// it was last started (its serial.log), like Machine.Serial.
func (v VMState) Serial() string {
	data, _ := os.ReadFile(filepath.Join(v.Dir, SerialLogFile))
	return string(data)
}

// Machines returns the cluster's VMs, node1 first; each has its Name and
// Serial, for a test's failure report.
func (c *Cluster) Machines() []VMState { return slices.Clone(c.VMs) }

// spec is the QEMU spec of one of the cluster's VMs.
func (c *Cluster) spec(v VMState, accel string) Spec {
	s := Spec{
		Name:       c.Name + "-" + v.Name,
		Firmware:   BIOS,
		SecureBoot: c.SecureBoot,
		Accel:      accel,
		MemoryMiB:  v.MemoryMiB,
		CPUs:       v.CPUs,
		NetNS:      c.NetNS,
		Dir:        v.Dir,
		Console:    true,
		GuestAgent: true,
		Reboot:     true,
		Detach:     !c.attached,
	}
	if c.SecureBoot {
		s.Firmware = UEFI
	}
	s.VGA = v.Role == RoleHead && c.Display
	switch {
	case v.Role == RoleHead:
		// The ISO boots (SeaBIOS: as a CD-ROM; OVMF with Secure Boot: as a
		// USB stick); the NIC only serves. The uplink's NIC comes second,
		// so that the cluster's is the first wired card (the boot menu's
		// choice of card counts from it).
		if c.SecureBoot {
			s.USBDisk = c.ISO
		} else {
			s.CDROM = c.ISO
		}
		s.NICs = []NIC{{Tap: v.Tap, MAC: v.MAC}}
		if v.UplinkTap != "" {
			s.NICs = append(s.NICs, NIC{Tap: v.UplinkTap, MAC: v.UplinkMAC})
		}
	case c.SecureBoot:
		// The NIC first, without an option ROM: OVMF's own PXE client
		// loads shim from node1, as a PC's firmware does.
		s.NICs = []NIC{{Tap: v.Tap, MAC: v.MAC, Boot: true}}
		s.Disk = v.Disk
		s.ExtraArgs = append(s.ExtraArgs, "-global", "virtio-net-pci.romfile=")
	default:
		// The NIC first: SeaBIOS runs its iPXE ROM, which boots from node1.
		// The empty disk comes after, so a node never boots from it.
		s.NICs = []NIC{{Tap: v.Tap, MAC: v.MAC, Boot: true}}
		s.Disk = v.Disk
	}
	return s
}

// save writes the cluster's state file.
func (c *Cluster) save() error { return WriteState(c.Dir, &c.State) }

// vm returns a pointer to the VM named name in the state, or nil.
func (c *Cluster) vm(name string) *VMState {
	for i := range c.VMs {
		if c.VMs[i].Name == name {
			return &c.VMs[i]
		}
	}
	return nil
}

// startVM starts one VM's QEMU and records its pid.
func (c *Cluster) startVM(v *VMState) (*Machine, error) {
	if v.Running() {
		return nil, fmt.Errorf("%s is already running (QEMU pid %d)", v.Name, v.PID)
	}
	if c.ISO != "" && v.Role == RoleHead {
		if _, err := os.Stat(c.ISO); err != nil {
			return nil, fmt.Errorf("%s: the ISO: %w", v.Name, err)
		}
	}
	spec := c.spec(*v, c.Accel)
	if v.Role == RoleNode && spec.Firmware == BIOS {
		// With no VGA, SeaBIOS and the NIC's iPXE write to the screen only;
		// SeaBIOS's serial console (its etc/sercon-port setting, a
		// little-endian I/O port number) puts their messages on the serial
		// line, so that a node's PXE boot shows in its log and console.
		port := filepath.Join(v.Dir, "sercon-port")
		if err := os.WriteFile(port, []byte{0xf8, 0x03}, 0o644); err != nil { // COM1, 0x3f8
			return nil, err
		}
		spec.ExtraArgs = append(spec.ExtraArgs, "-fw_cfg", "name=etc/sercon-port,file="+qemuValue(port))
	}
	m, err := Start(spec)
	if err != nil {
		return nil, err
	}
	v.PID = m.PID()
	if err := c.save(); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

// Up creates and boots a virtual cluster: node1 from the ISO, and once its
// head serves (its login prompt shows), the nodes from the network. It
// returns once every node has joined (see waitNodes), or with an error. The
// VMs keep running after Up returns and after the process exits; Down
// removes them. If Up fails before any VM boots it removes what it made;
// if a VM fails to boot in time the cluster is left up, to be inspected
// (`clusterdebian vm console`) and removed with Down.
func Up(ctx context.Context, o UpOptions) (*Cluster, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := netns.Check(); err != nil {
		return nil, fmt.Errorf("vm up: %w: the cluster's network namespace, bridge and taps need root; run it with sudo", err)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return nil, errors.New("vm up: qemu-system-x86_64 not found; install qemu-system-x86 (clusterdebian doctor lists what the tests and VMs need)")
	}
	if o.LAN != "" || o.Uplink {
		if err := hosttools.Require(roomTools()); err != nil {
			return nil, fmt.Errorf("vm up: the LAN's and the uplink's servers: %w", err)
		}
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	c, err := setUp(ctx, o, progress)
	if err != nil {
		return nil, err
	}
	if avail := memAvailableMiB(); avail > 0 {
		if want := o.MemoryMiB + o.Nodes*o.NodeMemoryMiB; want > avail {
			fmt.Fprintf(progress, "warning: the VMs may use %d MiB and this machine has %d MiB available\n", want, avail)
		}
	}

	headVM := c.vm(HeadVM)
	fmt.Fprintf(progress, "cluster %s: network namespace %s, node1 and %d node VM(s), accel %s; state in %s\n", o.Name, c.NetNS, o.Nodes, o.Accel, c.Dir)
	head, err := c.startVM(headVM)
	if err != nil {
		c.Down()
		return nil, fmt.Errorf("vm up: %w", err)
	}
	bctx, cancel := context.WithTimeout(ctx, o.BootTimeout)
	defer cancel()
	err = c.waitHead(bctx, head, progress)
	if errors.Is(err, ErrPanicked) {
		// Software emulation occasionally kills a guest kernel at boot
		// (see accelArg); one more power-on is what a person would try.
		fmt.Fprintf(progress, "%v; powering node1 on once more\n", err)
		head.Stop()
		if head, err = c.startVM(headVM); err == nil {
			err = c.waitHead(bctx, head, progress)
		}
	}
	if err != nil {
		return c, c.upFailed(err)
	}
	if o.Nodes == 0 {
		return c, nil
	}
	var machines []*Machine
	nctx, ncancel := context.WithTimeout(ctx, o.BootTimeout)
	defer ncancel()
	for i := range c.VMs {
		v := &c.VMs[i]
		if v.Role != RoleNode || i > o.Nodes-o.Later {
			continue
		}
		m, err := c.startVM(v)
		if err != nil {
			return c, c.upFailed(err)
		}
		if o.OneByOne {
			if err := c.waitNodes(nctx, []*Machine{m}, progress); err != nil {
				return c, c.upFailed(err)
			}
			continue
		}
		machines = append(machines, m)
	}
	if err := c.waitNodes(nctx, machines, progress); err != nil {
		return c, c.upFailed(err)
	}
	return c, nil
}

// setUp makes the cluster's state, folders, disks and network, its rooms
// running, after it removed what an earlier run of the name left: all but
// the VMs. On error it removes what it made.
func setUp(ctx context.Context, o UpOptions, progress io.Writer) (*Cluster, error) {
	dir := ClusterDir(o.Name)
	nsName := NetNSPrefix + o.Name
	if old, err := ReadState(dir); err == nil {
		running := 0
		for _, v := range old.VMs {
			if v.Running() {
				running++
			}
		}
		if running > 0 {
			return nil, fmt.Errorf("vm up: cluster %q: %w (%d of its %d VMs run)", o.Name, ErrAlreadyUp, running, len(old.VMs))
		}
		// Left over from a crash or a host reboot: nothing runs, so clear it.
		fmt.Fprintf(progress, "cluster %s: removing the remains of an earlier run (no VM of it runs)\n", o.Name)
		if err := newCluster(dir, old).Down(); err != nil {
			return nil, err
		}
	} else if !notFound(err) {
		return nil, fmt.Errorf("vm up: cluster %q: %w: a damaged state (%v)", o.Name, ErrLeftover, err)
	} else {
		for _, ns := range []string{nsName, roomNetNS(o.Name, RoomLAN), roomNetNS(o.Name, RoomUplink)} {
			if netns.Exists(ns) {
				return nil, fmt.Errorf("vm up: cluster %q: %w: the network namespace %s exists but the cluster has no state", o.Name, ErrLeftover, ns)
			}
		}
	}

	if err := os.MkdirAll(StateRoot, 0o755); err != nil {
		return nil, err
	}
	// Mkdir, not MkdirAll: two `vm up` of the same name race here, and only
	// one wins.
	if err := os.Mkdir(dir, 0o755); err != nil {
		if os.IsExist(err) {
			return nil, fmt.Errorf("vm up: cluster %q: %w: %s exists: another Up of the cluster is running, or a crash left it", o.Name, ErrLeftover, dir)
		}
		return nil, err
	}
	st := &State{Name: o.Name, NetNS: nsName, Bridge: Bridge, ISO: o.ISO, Accel: o.Accel, SecureBoot: o.SecureBoot, Display: o.Display, Created: time.Now().UTC()}
	for i := 1; i <= o.Nodes+1; i++ {
		v := VMState{Role: RoleNode, MAC: MAC(o.Name, i), Tap: "tap" + strconv.Itoa(i), MemoryMiB: o.NodeMemoryMiB, CPUs: o.CPUs}
		v.Name = "vm" + strconv.Itoa(i)
		if i == 1 {
			v.Name, v.Role, v.MemoryMiB = HeadVM, RoleHead, o.MemoryMiB
			if o.Uplink {
				v.UplinkTap, v.UplinkMAC = UplinkTap, MAC(o.Name, uplinkNIC)
			}
		}
		v.Dir = filepath.Join(dir, v.Name)
		if v.Role == RoleNode {
			v.Disk = filepath.Join(v.Dir, "disk.qcow2")
		}
		st.VMs = append(st.VMs, v)
	}
	if o.LAN != "" {
		lan, _ := checkLAN(o.LAN) // validated
		st.LAN = newRoom(o.Name, dir, RoomLAN, lan)
	}
	if o.Uplink {
		st.Uplink = newRoom(o.Name, dir, RoomUplink, netip.MustParsePrefix(UplinkSubnet))
	}
	c := newCluster(dir, st)
	c.attached = o.Attached
	// The state is written before anything else is made, so that Down finds
	// everything after a crash at any later point.
	if err := c.save(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.create(ctx); err != nil {
		c.Down()
		return nil, fmt.Errorf("vm up: %w", err)
	}
	for _, r := range c.rooms() {
		fmt.Fprintf(progress, "%s\n", r.Describe())
	}
	if o.OnNetwork != nil {
		if err := o.OnNetwork(c); err != nil {
			c.Down()
			return nil, fmt.Errorf("vm up: %w", err)
		}
	}
	return c, nil
}

// upFailed explains a failure once the cluster's VMs are running (Up then
// returns the cluster too).
func (c *Cluster) upFailed(err error) error {
	return fmt.Errorf("vm up: %w\nThe cluster is still up, to look at; its serial logs are in %s/*/%s", err, c.Dir, SerialLogFile)
}

// create makes the VM folders, the nodes' disks, the namespace with its
// bridges and taps, and the rooms with their servers running.
func (c *Cluster) create(ctx context.Context) error {
	for _, v := range c.VMs {
		if err := os.MkdirAll(v.Dir, 0o755); err != nil {
			return err
		}
		if v.Disk != "" {
			if err := makeDisk(ctx, v.Disk); err != nil {
				return err
			}
		}
	}
	ns, err := netns.New(ctx, c.NetNS)
	if err != nil {
		return err
	}
	// No address on the bridge: node1's head daemon is the only one with an
	// address on this network, as on a real cluster switch.
	if err := ns.AddBridge(ctx, c.Bridge); err != nil {
		return err
	}
	for _, v := range c.VMs {
		if err := ns.AddTap(ctx, v.Tap, c.Bridge); err != nil {
			return err
		}
		if v.UplinkTap != "" {
			if err := ns.AddBridge(ctx, UplinkBridge); err != nil {
				return err
			}
			if err := ns.AddTap(ctx, v.UplinkTap, UplinkBridge); err != nil {
				return err
			}
		}
	}
	for _, r := range c.rooms() {
		if err := c.createRoom(ctx, r); err != nil {
			return fmt.Errorf("the %s: %w", r.Kind, err)
		}
		if err := c.startRoom(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// rooms are the cluster's LAN and uplink, those it has.
func (c *Cluster) rooms() []*RoomState {
	var rs []*RoomState
	for _, r := range []*RoomState{c.LAN, c.Uplink} {
		if r != nil {
			rs = append(rs, r)
		}
	}
	return rs
}

// makeDisk creates an empty sparse disk image.
func makeDisk(ctx context.Context, path string) error {
	if _, err := exec.LookPath("qemu-img"); err == nil {
		out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", path, DiskSize).CombinedOutput()
		if err != nil {
			return fmt.Errorf("qemu-img create %s: %v: %s", path, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return errors.New("qemu-img not found; install qemu-utils")
}

// memAvailableMiB is MemAvailable from /proc/meminfo, 0 if unknown.
func memAvailableMiB() int {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}

// VMInfo is one line of List.
type VMInfo struct {
	VM      string // node1, vm2, ...
	Role    string
	MAC     string
	Node    string // the guest's host name, "-" when its agent does not answer
	Running bool
	PID     int
}

// State is "running" or "stopped".
func (i VMInfo) State() string {
	if i.Running {
		return "running"
	}
	return "stopped"
}

// hostnameTimeout bounds one guest agent's answer in List and name
// resolution: a guest without an agent never answers.
var hostnameTimeout = 3 * time.Second

// hostnames asks every running VM's guest agent for its host name, all at
// once; a VM that is stopped or does not answer gets "".
func (c *Cluster) hostnames(ctx context.Context) []string {
	names := make([]string, len(c.VMs))
	var wg sync.WaitGroup
	for i, v := range c.VMs {
		if !c.running(v) {
			continue
		}
		wg.Go(func() {
			hctx, cancel := context.WithTimeout(ctx, hostnameTimeout)
			defer cancel()
			if h, err := c.hostname(hctx, v); err == nil {
				names[i] = h
			}
		})
	}
	wg.Wait()
	return names
}

// running is VMState.Running, except in tests, where VMs have no QEMU.
func (c *Cluster) running(v VMState) bool {
	if testRunning != nil {
		return testRunning(v)
	}
	return v.Running()
}

var testRunning func(VMState) bool

// List describes every VM of the cluster.
func (c *Cluster) List(ctx context.Context) []VMInfo {
	names := c.hostnames(ctx)
	out := make([]VMInfo, len(c.VMs))
	for i, v := range c.VMs {
		node := names[i]
		if node == "" {
			node = "-"
		}
		out[i] = VMInfo{VM: v.Name, Role: v.Role, MAC: v.MAC, Node: node, Running: c.running(v), PID: v.PID}
	}
	return out
}

// Resolve finds the VM that node names: a VM name (node1 is always the
// head's VM), a MAC, or a node's host name such as node12, which the guest
// agents are asked for; a VM whose agent does not answer is recognised by
// the host name on its last login prompt.
func (c *Cluster) Resolve(ctx context.Context, node string) (*VMState, error) {
	if v := c.vm(node); v != nil {
		return v, nil
	}
	for i := range c.VMs {
		if strings.EqualFold(c.VMs[i].MAC, node) {
			return &c.VMs[i], nil
		}
	}
	for i, h := range c.hostnames(ctx) {
		if h == node || strings.HasPrefix(h, node+".") {
			return &c.VMs[i], nil
		}
	}
	// Running VMs first: a stopped VM's log may be old.
	for _, running := range []bool{true, false} {
		for i := range c.VMs {
			if c.running(c.VMs[i]) == running && lastLoginName(c.VMs[i].Dir) == node {
				return &c.VMs[i], nil
			}
		}
	}
	var vms []string
	for _, v := range c.VMs {
		vms = append(vms, v.Name)
	}
	return nil, fmt.Errorf("cluster %s: %w or node %q (VMs: %s; node names come from the guest agents)", c.Name, ErrNoVM, node, strings.Join(vms, ", "))
}

// loginRe matches a getty's login prompt and captures the host name.
var loginRe = regexp.MustCompile(`(?m)^(\S+) login: ?`)

// lastLoginName is the host name on the last login prompt in a VM's serial
// log, "" if none.
func lastLoginName(dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, SerialLogFile))
	if err != nil {
		return ""
	}
	m := loginRe.FindAllSubmatch(data, -1)
	if len(m) == 0 {
		return ""
	}
	return string(m[len(m)-1][1])
}

// Exec runs argv in the VM node (see Resolve) as root, through its guest
// agent: argv[0] is looked up in the guest's PATH, and no shell is involved.
func (c *Cluster) Exec(ctx context.Context, node string, argv ...string) (stdout, stderr string, code int, err error) {
	if len(argv) == 0 {
		return "", "", -1, errors.New("vm exec: no command")
	}
	v, err := c.Resolve(ctx, node)
	if err != nil {
		return "", "", -1, err
	}
	if !c.running(*v) {
		return "", "", -1, &StoppedError{VM: v.Name}
	}
	out, errOut, code, err := QGAExec(ctx, filepath.Join(v.Dir, QGASocket), argv[0], argv[1:])
	if err != nil {
		err = fmt.Errorf("%s: %w", v.Name, err)
	}
	return string(out), string(errOut), code, err
}

// Stop powers the VM node off hard (kills its QEMU). Stopping a stopped VM
// is no error.
func (c *Cluster) Stop(node string) error {
	v, err := c.Resolve(context.Background(), node)
	if err != nil {
		return err
	}
	if err := killQEMU(v.PID, v.Dir); err != nil {
		return fmt.Errorf("%s: %w", v.Name, err)
	}
	v.PID = 0
	return c.save()
}

// Start boots the stopped VM node again; it returns once QEMU runs, without
// waiting for the guest.
func (c *Cluster) Start(node string) error {
	v, err := c.Resolve(context.Background(), node)
	if err != nil {
		return err
	}
	if !netns.Exists(c.NetNS) {
		return fmt.Errorf("cluster %s: %w (%s; host rebooted?)", c.Name, ErrNetNSGone, c.NetNS)
	}
	_, err = c.startVM(v)
	return err
}

// ConsoleSocket is the path of the serial console socket of the VM node.
func (c *Cluster) ConsoleSocket(ctx context.Context, node string) (string, *VMState, error) {
	v, err := c.Resolve(ctx, node)
	if err != nil {
		return "", nil, err
	}
	if !c.running(*v) {
		return "", v, &StoppedError{VM: v.Name}
	}
	return filepath.Join(v.Dir, ConsoleSocket), v, nil
}

// Machine returns the running VM node (a registry name or a VM name) as a
// Machine, for what its QEMU monitor does: Type on its keyboard,
// Screendump of its display (UpOptions.Display), Monitor. Errors: those of
// Resolve, or a *StoppedError.
func (c *Cluster) Machine(ctx context.Context, node string) (*Machine, error) {
	v, err := c.Resolve(ctx, node)
	if err != nil {
		return nil, err
	}
	if !c.running(*v) {
		return nil, &StoppedError{VM: v.Name}
	}
	return &Machine{Spec: c.spec(*v, c.Accel), SerialPath: filepath.Join(v.Dir, SerialLogFile)}, nil
}

// Down stops every VM and removes the taps, the bridge, the namespace and
// the state folder. It is idempotent and works from whatever a crash left.
func (c *Cluster) Down() error {
	return down(c.Name, c.Dir, &c.State)
}

// Down removes the cluster name, whatever state it is in: see
// (*Cluster).Down. A cluster that does not exist is no error.
func Down(name string) error {
	if name == "" {
		name = DefaultName
	}
	if err := CheckName(name); err != nil {
		return err
	}
	dir := ClusterDir(name)
	st, err := ReadState(dir)
	if err != nil && !notFound(err) {
		// A damaged state file: still remove what the name alone finds.
		st = nil
	}
	return down(name, dir, st)
}

func down(name, dir string, st *State) error {
	ctx := context.Background()
	var errs []error
	nsName := NetNSPrefix + name
	var taps []string
	bridge := Bridge
	// The rooms first, while the cluster's namespace still holds their
	// veths' ends; by their names alone when the state is lost.
	rooms := map[string]string{roomNetNS(name, RoomLAN): roomPort(RoomLAN), roomNetNS(name, RoomUplink): roomPort(RoomUplink)}
	if st != nil {
		for _, r := range []*RoomState{st.LAN, st.Uplink} {
			if r != nil {
				rooms[r.NetNS] = r.Port
			}
		}
	}
	if st != nil && st.NetNS != "" {
		nsName = st.NetNS
	}
	for ns, port := range rooms {
		if err := downRoom(ctx, nsName, ns, port); err != nil {
			errs = append(errs, err)
		}
	}
	if st != nil {
		if st.Bridge != "" {
			bridge = st.Bridge
		}
		for _, v := range st.VMs {
			if err := killQEMU(v.PID, v.Dir); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", v.Name, err))
			}
			taps = append(taps, v.Tap)
			if v.UplinkTap != "" {
				taps = append(taps, v.UplinkTap)
			}
		}
	}
	// QEMUs that a crash kept from the state file (started, pid not yet
	// written) are found in the namespace, by their folder under dir.
	if netns.Exists(nsName) {
		out, _ := exec.Command("ip", "netns", "pids", nsName).Output()
		for f := range strings.FieldsSeq(string(out)) {
			pid, _ := strconv.Atoi(f)
			if vmDir := qemuDirOf(pid); vmDir != "" && filepath.Dir(vmDir) == dir {
				if err := killQEMU(pid, vmDir); err != nil {
					errs = append(errs, err)
				}
			}
		}
		ns := &netns.NS{Name: nsName}
		// Deleting the namespace takes its interfaces with it, but only once
		// no process holds it; deleting them first frees them at once.
		for _, t := range taps {
			ns.IP(ctx, "link", "del", t)
		}
		ns.IP(ctx, "link", "del", bridge)
		ns.IP(ctx, "link", "del", UplinkBridge)
		if err := ns.Delete(ctx); err != nil && netns.Exists(nsName) {
			errs = append(errs, err)
		}
	}
	if filepath.Dir(dir) == filepath.Clean(StateRoot) && filepath.Base(dir) == name {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// qemuDirOf returns the VM folder of the QEMU with pid (its -pidfile's
// folder), or "" when pid is no QEMU.
func qemuDirOf(pid int) string {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if !strings.Contains(filepath.Base(args[0]), "qemu-system") {
		return ""
	}
	if i := slices.Index(args, "-pidfile"); i >= 0 && i+1 < len(args) {
		return filepath.Dir(args[i+1])
	}
	return ""
}
