package localnode1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/head"
)

// System is the host localnode1 changes: its files (under Root) and the
// commands it runs. Tests give a temporary Root and fake commands and
// interfaces, so that no test touches the machine it runs on.
type System struct {
	// Root prefixes every file path; "/" on a real host.
	Root string
	// Run runs a command and returns its combined output.
	Run func(ctx context.Context, name string, args ...string) (string, error)
	// Addrs returns the IPv4 addresses of an interface, or an error when
	// there is no such interface.
	Addrs func(iface string) ([]netip.Prefix, error)
	// DefaultRoutes returns the interfaces that hold a default route.
	DefaultRoutes func() ([]string, error)
	// FileSystemID identifies the file system a path (under Root) is on,
	// as head.System's does; nil: stat's st_dev.
	FileSystemID func(path string) (uint64, error)
	// Log gets a line per action taken.
	Log io.Writer
}

// Host is the running machine.
func Host(log io.Writer) *System {
	if log == nil {
		log = io.Discard
	}
	return &System{Root: "/", Run: runCommand, Addrs: head.InterfaceAddrs, DefaultRoutes: defaultRoutes,
		FileSystemID: head.HostSystem().FileSystemID, Log: log}
}

// fileSystemID is FileSystemID, or the host's when unset.
func (s *System) fileSystemID(path string) (uint64, error) {
	if s.FileSystemID != nil {
		return s.FileSystemID(path)
	}
	return head.HostSystem().FileSystemID(path)
}

func runCommand(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	// apt and dpkg must never ask: the plan was agreed to already.
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, lastLines(string(out), 5))
	}
	return string(out), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// defaultRoutes reads the kernel's IPv4 and IPv6 routing tables.
func defaultRoutes() ([]string, error) {
	var out []string
	v4, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return nil, err
	}
	out = append(out, parseRoute(v4)...)
	if v6, err := os.ReadFile("/proc/net/ipv6_route"); err == nil {
		out = append(out, parseIPv6Route(v6)...)
	}
	return dedupe(out), nil
}

// parseRoute returns the interfaces of /proc/net/route's default routes
// (destination and mask 0).
func parseRoute(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 8 && f[1] == "00000000" && f[7] == "00000000" {
			out = append(out, f[0])
		}
	}
	return out
}

// parseIPv6Route returns the interfaces of /proc/net/ipv6_route's default
// routes (::/0), except unreachable ones on lo.
func parseIPv6Route(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 10 && f[0] == strings.Repeat("0", 32) && f[1] == "00" && f[9] != "lo" {
			out = append(out, f[9])
		}
	}
	return out
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// path is p (absolute, as on the host) under s.Root.
func (s *System) path(p string) string { return filepath.Join(s.Root, p) }

// read returns a file's content; a missing file is nil with exists false.
func (s *System) read(p string) (data []byte, exists bool, err error) {
	data, err = os.ReadFile(s.path(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	return data, err == nil, err
}

func (s *System) write(p string, data []byte, mode fs.FileMode) error {
	return atomicfile.Write(s.path(p), data, mode)
}

func (s *System) exists(p string) bool {
	_, err := os.Lstat(s.path(p))
	return err == nil
}

func (s *System) logf(format string, args ...any) {
	fmt.Fprintf(s.Log, format+"\n", args...)
}

// unitActive reports whether systemctl is-active says active.
func (s *System) unitActive(ctx context.Context, unit string) bool {
	out, err := s.Run(ctx, "systemctl", "is-active", unit)
	return err == nil && strings.TrimSpace(out) == "active"
}

// unitEnabled reports whether systemctl is-enabled says enabled.
func (s *System) unitEnabled(ctx context.Context, unit string) bool {
	out, err := s.Run(ctx, "systemctl", "is-enabled", unit)
	return err == nil && strings.TrimSpace(out) == "enabled"
}

// installed reports whether dpkg has pkg installed.
func (s *System) installed(ctx context.Context, pkg string) bool {
	out, err := s.Run(ctx, "dpkg-query", "-W", "-f=${db:Status-Status}", pkg)
	return err == nil && strings.TrimSpace(out) == "installed"
}
