// Package netns builds small virtual networks out of Linux network
// namespaces, bridges, tap devices and veth pairs, by shelling out to
// iproute2's ip(8). The end-to-end tests use it to boot VMs against a real
// head daemon without touching a single interface of the machine they run
// on, and `clusterdebian vm` uses it to give a virtual cluster its own
// private network.
//
// Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// TestPrefix starts the name of every namespace the tests create, so that a
// leftover from a killed test run is recognisable (and removable with
// `ip netns del`) and never mistaken for something the system made.
const TestPrefix = "cdt-"

// runDir is where `ip netns add` bind-mounts a namespace under its name.
const runDir = "/run/netns"

// UniqueName returns prefix followed by random hex, short enough to also be a
// valid interface name (15 bytes) when prefix is at most 6 bytes long, so one
// name can serve for a namespace and for an interface in the root namespace.
func UniqueName(prefix string) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return prefix + hex.EncodeToString(b[:])
}

// NS is a named network namespace.
type NS struct {
	Name string
}

// ip runs ip(8) with args and returns an error that carries its output, since
// iproute2 says what went wrong only on stderr.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// New creates the namespace name and brings its loopback up (a fresh
// namespace has lo down, and servers that also listen on 127.0.0.1 need it).
func New(ctx context.Context, name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return nil, fmt.Errorf("netns: invalid namespace name %q", name)
	}
	if err := ip(ctx, "netns", "add", name); err != nil {
		return nil, err
	}
	ns := &NS{Name: name}
	if err := ns.IP(ctx, "link", "set", "lo", "up"); err != nil {
		ns.Delete(context.WithoutCancel(ctx))
		return nil, err
	}
	return ns, nil
}

// Delete removes the namespace. Interfaces inside it go with it: taps and
// bridges are destroyed, and a veth pair is destroyed when either end is.
// Processes still running inside keep it alive until they exit, so callers
// stop those first.
func (n *NS) Delete(ctx context.Context) error {
	return ip(ctx, "netns", "del", n.Name)
}

// Path is the namespace's file, for setns(2).
func (n *NS) Path() string { return filepath.Join(runDir, n.Name) }

// IP runs `ip -n <ns> args...`, that is ip(8) acting inside the namespace.
func (n *NS) IP(ctx context.Context, args ...string) error {
	return ip(ctx, append([]string{"-n", n.Name}, args...)...)
}

// Command returns a command that runs name inside the namespace, through
// `ip netns exec`, which also gives it the namespace's /etc/netns files and
// a matching /sys.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Output runs name inside the namespace and returns its standard output; on
// failure the error carries standard error too.
func (n *NS) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := n.Command(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s in netns %s: %v: %s", name, strings.Join(args, " "), n.Name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// AddBridge creates a bridge inside the namespace and brings it up. STP is
// off and the forward delay zero, so that a port passes traffic as soon as
// it is up: a PXE ROM gives up on DHCP long before STP's 30 seconds. addrs
// are assigned to the bridge; none is fine (the head adds its own).
func (n *NS) AddBridge(ctx context.Context, name string, addrs ...netip.Prefix) error {
	if err := n.IP(ctx, "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"); err != nil {
		return err
	}
	for _, a := range addrs {
		if err := n.AddAddr(ctx, name, a); err != nil {
			return err
		}
	}
	return n.IP(ctx, "link", "set", name, "up")
}

// AddAddr assigns addr (address and prefix length) to the interface dev.
func (n *NS) AddAddr(ctx context.Context, dev string, addr netip.Prefix) error {
	return n.IP(ctx, "addr", "add", addr.String(), "dev", dev)
}

// AddTap creates a tap device inside the namespace, attaches it to bridge
// (when not empty) and brings it up. QEMU opens it by name from inside the
// namespace; until then it has no carrier, which the bridge tolerates.
func (n *NS) AddTap(ctx context.Context, name, bridge string) error {
	if err := n.IP(ctx, "tuntap", "add", "dev", name, "mode", "tap"); err != nil {
		return err
	}
	if bridge != "" {
		if err := n.IP(ctx, "link", "set", name, "master", bridge); err != nil {
			return err
		}
	}
	return n.IP(ctx, "link", "set", name, "up")
}

// AddVeth creates a veth pair with end aName in namespace a and end bName in
// namespace b, and brings both up. A nil namespace means the caller's own
// (the root namespace, for `clusterdebian vm` reaching its VMs). The pair is
// made inside a and its peer moved, so no name is ever taken in the root
// namespace by accident.
func AddVeth(ctx context.Context, a *NS, aName string, b *NS, bName string) error {
	run := func(ns *NS, args ...string) error {
		if ns == nil {
			return ip(ctx, args...)
		}
		return ns.IP(ctx, args...)
	}
	args := []string{"link", "add", aName, "type", "veth", "peer", "name", bName}
	if b != nil {
		args = append(args, "netns", b.Name)
	} else if a != nil {
		// The peer would otherwise stay in a; move it to the root namespace,
		// named by pid 1's namespace.
		args = append(args, "netns", "1")
	}
	if err := run(a, args...); err != nil {
		return err
	}
	if err := run(a, "link", "set", aName, "up"); err != nil {
		return err
	}
	return run(b, "link", "set", bName, "up")
}

// SetMaster attaches the interface dev to bridge, for example a veth end.
func (n *NS) SetMaster(ctx context.Context, dev, bridge string) error {
	return n.IP(ctx, "link", "set", dev, "master", bridge)
}

// Do runs fn on an OS thread that has entered the namespace, for Go code
// that must open sockets inside it. Sockets opened by fn stay in the
// namespace after fn returns. Goroutines that fn starts do not inherit the
// namespace: they run on other threads.
//
// The thread is never handed back to the Go scheduler: the goroutine exits
// still locked to it, so the runtime ends the thread rather than reuse one
// whose namespace no longer matches the rest of the process.
func (n *NS) Do(fn func() error) error {
	f, err := os.Open(n.Path())
	if err != nil {
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netns %s: setns: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Exists reports whether a namespace of that name exists.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(runDir, name))
	return err == nil
}

// ErrNotRoot is returned by Check when the caller cannot manage namespaces.
var ErrNotRoot = errors.New("network namespaces need root")

// Check reports whether this process can create namespaces: it must be root
// and have ip(8).
func Check() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("ip(8) not found; install iproute2: %w", err)
	}
	return nil
}
