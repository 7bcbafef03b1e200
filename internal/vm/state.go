package vm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// StateRoot holds one folder per virtual cluster. A variable so that tests
// can point it elsewhere.
var StateRoot = "/var/lib/clusterdebian/vm"

// StateFile is the name of a cluster's state file in its folder.
const StateFile = "state.json"

// NetNSPrefix starts the name of every cluster's network namespace.
const NetNSPrefix = "cdvm-"

// Bridge is the name of the bridge inside a cluster's namespace; every VM's
// tap is a port of it.
const Bridge = "br0"

// Roles of the VMs of a cluster.
const (
	RoleHead = "head" // node1: boots the ISO, serves the others
	RoleNode = "node" // boots from the network
)

// HeadVM is the name of the head's VM; it is also the head's host name.
const HeadVM = contract.HeadName

// State is what a cluster's state.json records: enough to find, restart and
// remove every piece of it after `vm up` has exited, or crashed.
type State struct {
	Name   string `json:"name"`
	NetNS  string `json:"netns"`
	Bridge string `json:"bridge"`
	ISO    string `json:"iso"`
	Accel  string `json:"accel"`
	// SecureBoot: every VM boots UEFI with Secure Boot on (UpOptions).
	SecureBoot bool `json:"secure_boot,omitempty"`
	// Display: node1 has a VGA card (UpOptions).
	Display bool      `json:"display,omitempty"`
	Created time.Time `json:"created"`
	VMs     []VMState `json:"vms"`
	// LAN, when set, is the LAN the cluster's bridge is (UpOptions.LAN);
	// Uplink the network of node1's second NIC (UpOptions.Uplink).
	LAN    *RoomState `json:"lan,omitempty"`
	Uplink *RoomState `json:"uplink,omitempty"`
}

// VMState is one VM of a cluster.
type VMState struct {
	Name      string `json:"name"` // node1, vm2, vm3, ...
	Role      string `json:"role"`
	MAC       string `json:"mac"`
	Tap       string `json:"tap"`
	Dir       string `json:"dir"`
	Disk      string `json:"disk,omitempty"`
	MemoryMiB int    `json:"memory_mib"`
	CPUs      int    `json:"cpus"`
	PID       int    `json:"pid"` // QEMU's; 0 when not started
	// UplinkTap and UplinkMAC are node1's second NIC's, on the uplink
	// (UpOptions.Uplink); empty without one.
	UplinkTap string `json:"uplink_tap,omitempty"`
	UplinkMAC string `json:"uplink_mac,omitempty"`
}

// ClusterDir is the state folder of the cluster name.
func ClusterDir(name string) string { return filepath.Join(StateRoot, name) }

// ReadState reads a cluster's state file.
func ReadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, err
	}
	var st State
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	return &st, nil
}

// WriteState writes the state file atomically: a reader (another
// clusterdebian command, or `vm down` after a crash) sees the old or the new
// state, never half of one. It does not create dir: once `vm down` has
// removed the folder, a late write from a `vm up` still running fails
// instead of bringing a dead cluster back.
func WriteState(dir string, st *State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, StateFile)
	if err := atomicfile.WriteSync(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// qemuAlive reports whether pid is a live QEMU of the VM whose folder is
// dir. The folder is on QEMU's command line (-pidfile), so a pid the kernel
// has since given to another process is not mistaken for the VM.
func qemuAlive(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(cmdline) == 0 { // a zombie has an empty cmdline
		return false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if !strings.Contains(filepath.Base(args[0]), "qemu-system") {
		return false
	}
	want := filepath.Join(dir, PIDFile)
	for _, a := range args {
		if a == want {
			return true
		}
	}
	return false
}

// killQEMU kills the VM's QEMU, if it runs, and waits for it to be gone.
func killQEMU(pid int, dir string) error {
	if !qemuAlive(pid, dir) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing QEMU (pid %d): %w", pid, err)
	}
	for range 100 {
		if !qemuAlive(pid, dir) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("QEMU (pid %d) did not exit after SIGKILL", pid)
}

// notFound tells whether err means "no such file".
func notFound(err error) bool { return errors.Is(err, fs.ErrNotExist) }
