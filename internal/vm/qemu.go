// Package vm runs ClusterDebian machines under QEMU with their real firmware:
// SeaBIOS with the NIC's iPXE ROM, or OVMF for UEFI. It is the harness behind
// `clusterdebian vm` and the end-to-end tests: start a machine, read its serial
// console, wait for text on it, power it off.
//
// On top of that, a virtual cluster (cluster.go): node1 booting the ISO and
// nodes booting from it, on a private network namespace, with QEMU detached
// so the cluster outlives the command, its state in StateRoot, and the QEMU
// guest agent (qga.go) to run commands inside the VMs.
package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/tether"
)

// Firmware of a machine.
type Firmware string

const (
	BIOS Firmware = "bios" // SeaBIOS, with iPXE in the NIC's option ROM
	UEFI Firmware = "uefi" // OVMF
)

// Accelerators QEMU can use. KVM is much faster where it works; TCG works everywhere.
var Accels = []string{"tcg", "kvm"}

// NIC is one network card, joined to a tap device.
type NIC struct {
	Tap   string // tap interface name (in Spec.NetNS when set)
	MAC   string // aa:bb:cc:dd:ee:ff; empty: QEMU picks one
	Model string // default virtio-net-pci
	// Boot makes this NIC the first boot device (network boot).
	Boot bool
}

// Spec describes one machine.
type Spec struct {
	Name      string
	Firmware  Firmware
	Accel     string // "tcg" (default) or "kvm"
	MemoryMiB int    // default 2048
	CPUs      int    // default 1
	CDROM     string // an ISO attached as a CD-ROM, first boot device when set
	USBDisk   string // an image attached as a USB stick (writes go to a snapshot)
	Disk      string // a disk image (qcow2 or raw) attached as a virtio disk
	NICs      []NIC
	// NetNS runs QEMU inside this network namespace (taps live there).
	NetNS string
	// Dir holds the machine's serial log, UEFI variables and pid file.
	Dir       string
	ExtraArgs []string

	// Console puts the serial console on a unix socket, Dir/console.sock,
	// that a person can attach to (`clusterdebian vm console`), while QEMU
	// still logs everything to Dir/serial.log for Serial and WaitFor.
	Console bool
	// GuestAgent adds a virtio-serial channel for the QEMU guest agent on
	// the unix socket Dir/qga.sock (see QGAExec).
	GuestAgent bool
	// SecureBoot boots UEFI (Firmware UEFI) with Secure Boot on and the
	// keys machines ship with (Microsoft's), as Debian's OVMF build for it
	// has them: q35 with SMM, which keeps the firmware's variables out of
	// the guest's reach.
	SecureBoot bool
	// VGA gives the machine a standard VGA card (no window: the display
	// is read with Screendump) instead of none.
	VGA bool
	// Reboot lets a guest reboot. Without it QEMU exits when the guest
	// reboots, which is what tests want: a boot loop ends the test early.
	Reboot bool
	// Detach makes QEMU outlive the process that started it: it runs in a
	// session of its own and is not killed when its parent dies. Without
	// it, QEMU is killed with the process that started it, however that
	// ends (see package tether), so a crashing or timed-out test leaves no
	// VM behind.
	Detach bool
}

// Names of the files a machine keeps in Spec.Dir.
const (
	SerialLogFile = "serial.log"
	ConsoleSocket = "console.sock"
	QGASocket     = "qga.sock"
	PIDFile       = "qemu.pid"
	QEMULogFile   = "qemu.log"
)

// qemuValue escapes a value for QEMU's option syntax, in which a comma ends
// the value unless doubled.
func qemuValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Machine is a running QEMU.
type Machine struct {
	Spec       Spec
	SerialPath string
	cmd        *exec.Cmd
	done       chan struct{}
	waitErr    error
}

// OVMF firmware files, newest layout first.
var ovmfPairs = [][2]string{
	{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
}

// ovmfSecureBootPairs are Debian's OVMF builds for Secure Boot (they need
// SMM), with variables that have Microsoft's keys enrolled and Secure Boot
// on: a PC as it ships.
var ovmfSecureBootPairs = [][2]string{
	{"/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"},
	{"/usr/share/OVMF/OVMF_CODE.secboot.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd"},
}

func findOVMF(secureBoot bool) (code, vars string, err error) {
	pairs := ovmfPairs
	if secureBoot {
		pairs = ovmfSecureBootPairs
	}
	for _, p := range pairs {
		if _, err := os.Stat(p[0]); err == nil {
			if _, err := os.Stat(p[1]); err == nil {
				return p[0], p[1], nil
			}
		}
	}
	if secureBoot {
		return "", "", errors.New("no OVMF firmware with Secure Boot and Microsoft's keys found (OVMF_CODE_4M.secboot.fd, OVMF_VARS_4M.ms.fd); install the ovmf package (apt-get install ovmf)")
	}
	return "", "", errors.New("no OVMF firmware found; install the ovmf package (apt-get install ovmf)")
}

// Validate checks a spec and names what is wrong.
func (s *Spec) Validate() error {
	if s.Name == "" {
		return errors.New("vm: a machine needs a name")
	}
	switch s.Firmware {
	case BIOS, UEFI:
	case "":
		s.Firmware = BIOS
	default:
		return fmt.Errorf("vm %s: firmware %q: use bios or uefi", s.Name, s.Firmware)
	}
	switch s.Accel {
	case "":
		s.Accel = "tcg"
	case "tcg":
	case "kvm":
		if _, err := os.Stat("/dev/kvm"); err != nil {
			return fmt.Errorf("vm %s: accelerator kvm: /dev/kvm is not available; use tcg", s.Name)
		}
	default:
		return fmt.Errorf("vm %s: accelerator %q: use tcg or kvm", s.Name, s.Accel)
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = 2048
	}
	if s.MemoryMiB < 256 {
		return fmt.Errorf("vm %s: %d MiB of memory is too little; give at least 256 (a live node wants 1024 or more)", s.Name, s.MemoryMiB)
	}
	if s.CPUs == 0 {
		s.CPUs = 1
	}
	for _, f := range []struct{ what, path string }{{"CD-ROM image", s.CDROM}, {"USB image", s.USBDisk}, {"disk image", s.Disk}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("vm %s: %s %s: %w", s.Name, f.what, f.path, errors.Unwrap(err))
		}
	}
	if s.Dir == "" {
		return fmt.Errorf("vm %s: no state folder", s.Name)
	}
	if s.SecureBoot && s.Firmware != UEFI {
		return fmt.Errorf("vm %s: Secure Boot needs UEFI firmware, not %s", s.Name, s.Firmware)
	}
	return nil
}

// accelArg returns QEMU's -accel value. Under TCG a guest with several vCPUs
// runs them on one host thread (thread=single): with multi-threaded TCG the
// Debian kernel was seen to die of an int3 Oops while patching its own code
// at boot, as other vCPUs ran the bytes being patched.
func accelArg(accel string, cpus int) string {
	if accel == "tcg" && cpus > 1 {
		return "tcg,thread=single"
	}
	return accel
}

// Args returns QEMU's command line for the spec.
func (s *Spec) Args() ([]string, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	machine, vga := "q35", "none"
	if s.SecureBoot {
		machine += ",smm=on"
	}
	if s.VGA {
		vga = "std"
	}
	args := []string{
		"-name", s.Name,
		"-machine", machine,
		"-accel", accelArg(s.Accel, s.CPUs),
		"-m", strconv.Itoa(s.MemoryMiB),
		"-smp", strconv.Itoa(s.CPUs),
		"-display", "none", "-vga", vga,
	}
	if s.Console {
		// wait=off: QEMU boots without anyone attached; logfile gets every
		// byte whether or not a client is connected.
		args = append(args,
			"-chardev", "socket,id=ser0,path="+qemuValue(filepath.Join(s.Dir, ConsoleSocket))+",server=on,wait=off,logfile="+qemuValue(filepath.Join(s.Dir, SerialLogFile)),
			"-serial", "chardev:ser0")
	} else {
		args = append(args, "-serial", "file:"+filepath.Join(s.Dir, SerialLogFile))
	}
	args = append(args,
		"-monitor", "unix:"+filepath.Join(s.Dir, "monitor.sock")+",server,nowait",
		"-pidfile", filepath.Join(s.Dir, PIDFile))
	if s.Reboot {
		// When no boot device works (a node's network boot that found no
		// DHCP server yet), SeaBIOS waits forever unless told otherwise;
		// retry instead, as a machine in a room would be power-cycled.
		args = append(args, "-boot", "reboot-timeout=5000")
	} else {
		args = append(args, "-no-reboot")
	}
	if s.GuestAgent {
		args = append(args,
			"-device", "virtio-serial-pci,id=vser0",
			"-chardev", "socket,id=qga0,path="+qemuValue(filepath.Join(s.Dir, QGASocket))+",server=on,wait=off",
			"-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0")
	}
	if s.Accel == "kvm" {
		args = append(args, "-cpu", "host")
	}
	if s.Firmware == UEFI {
		code, vars, err := findOVMF(s.SecureBoot)
		if err != nil {
			return nil, err
		}
		// Each machine has its own copy of the variables, made once; the
		// Secure Boot one has its own name, so that a folder that held a
		// machine without Secure Boot never boots one with it from the
		// wrong variables.
		myVars := filepath.Join(s.Dir, "OVMF_VARS.fd")
		if s.SecureBoot {
			myVars = filepath.Join(s.Dir, "OVMF_VARS.ms.fd")
			// Only SMM may write the firmware's flash, so the guest
			// cannot change Secure Boot's keys behind the firmware.
			args = append(args, "-global", "driver=cfi.pflash01,property=secure,value=on")
		}
		if _, err := os.Stat(myVars); err != nil {
			data, err := os.ReadFile(vars)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(myVars, data, 0o644); err != nil {
				return nil, err
			}
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,unit=1,file="+myVars)
	}
	boot := 1
	if s.CDROM != "" {
		args = append(args, "-drive", "if=none,id=cd0,media=cdrom,readonly=on,format=raw,file="+qemuValue(s.CDROM),
			"-device", fmt.Sprintf("ide-cd,drive=cd0,bootindex=%d", boot))
		boot++
	}
	if s.USBDisk != "" {
		args = append(args, "-device", "qemu-xhci,id=xhci",
			"-drive", "if=none,id=usb0,format=raw,snapshot=on,file="+qemuValue(s.USBDisk),
			"-device", fmt.Sprintf("usb-storage,bus=xhci.0,drive=usb0,bootindex=%d", boot))
		boot++
	}
	for i, n := range s.NICs {
		model := n.Model
		if model == "" {
			model = "virtio-net-pci"
		}
		dev := fmt.Sprintf("%s,netdev=net%d", model, i)
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		if n.Boot {
			dev += fmt.Sprintf(",bootindex=%d", boot)
			boot++
		}
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=net%d,ifname=%s,script=no,downscript=no", i, n.Tap),
			"-device", dev)
	}
	if len(s.NICs) == 0 {
		args = append(args, "-nic", "none")
	}
	if s.Disk != "" {
		format := "raw"
		if strings.HasSuffix(s.Disk, ".qcow2") {
			format = "qcow2"
		}
		args = append(args, "-drive", "if=none,id=disk0,format="+format+",file="+qemuValue(s.Disk),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=disk0,bootindex=%d", boot))
	}
	// Every machine has a hardware RNG, as real PCs do: Debian's edk2
	// since 2025.02-2 (LP #2069439) creates no network boot option
	// without one, so UEFI nodes on a Debian 13 host never PXE-boot.
	// Added last, so that the NICs' and disk's PCI slots, and with them
	// the guest's interface names, stay as they were.
	args = append(args, "-object", "rng-random,id=rng0,filename=/dev/urandom",
		"-device", "virtio-rng-pci,rng=rng0")
	return append(args, s.ExtraArgs...), nil
}

// Start boots the machine. The machine runs until Stop, or until it powers off.
func Start(spec Spec) (*Machine, error) {
	if spec.Dir != "" {
		if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
			return nil, err
		}
	}
	args, err := spec.Args()
	if err != nil {
		return nil, err
	}
	serial := filepath.Join(spec.Dir, SerialLogFile)
	os.Remove(serial)
	name := "qemu-system-x86_64"
	if spec.NetNS != "" {
		args = append([]string{"netns", "exec", spec.NetNS, name}, args...)
		name = "ip"
	}
	cmd := exec.Command(name, args...)
	logf, err := os.Create(filepath.Join(spec.Dir, QEMULogFile))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	start := cmd.Start
	if spec.Detach {
		// A session of its own: no terminal signal (Ctrl-C in the shell
		// that ran `vm up`) reaches it, and it outlives us.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		// Own process group, and die with us, however we end: a test that
		// crashes or times out leaves no VM. (`ip netns exec` execs QEMU in
		// place, so QEMU itself gets the signal.)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		start = func() error { return tether.Start(cmd) }
	}
	if err := start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting QEMU for %s: %w", spec.Name, err)
	}
	m := &Machine{Spec: spec, SerialPath: serial, cmd: cmd, done: make(chan struct{})}
	go func() {
		m.waitErr = cmd.Wait()
		logf.Close()
		close(m.done)
	}()
	return m, nil
}

// PID is QEMU's process id (`ip netns exec` execs QEMU in place, so it is
// QEMU's own id also with Spec.NetNS).
func (m *Machine) PID() int { return m.cmd.Process.Pid }

// Serial returns everything the machine has written to its serial console.
func (m *Machine) Serial() string {
	data, _ := os.ReadFile(m.SerialPath)
	return string(data)
}

// Running reports whether QEMU is still running.
func (m *Machine) Running() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// ErrExited is returned by WaitFor when the machine stopped first.
var ErrExited = errors.New("the machine stopped")

// WaitFor waits until the serial console matches re, and returns the match.
func (m *Machine) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if match := re.FindString(m.Serial()); match != "" {
			return match, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s: waiting for %q on the serial console: %w", m.Spec.Name, re, ctx.Err())
		case <-m.done:
			if match := re.FindString(m.Serial()); match != "" {
				return match, nil
			}
			qlog, _ := os.ReadFile(filepath.Join(m.Spec.Dir, "qemu.log"))
			return "", fmt.Errorf("%s: %w before %q appeared (%v): %s", m.Spec.Name, ErrExited, re, m.waitErr, strings.TrimSpace(string(qlog)))
		case <-t.C:
		}
	}
}

// Stop powers the machine off hard and waits for QEMU to exit.
func (m *Machine) Stop() {
	if !m.Running() {
		return
	}
	syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	<-m.done
}

// Wait waits for QEMU to exit by itself (the guest powered off).
func (m *Machine) Wait(ctx context.Context) error {
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
