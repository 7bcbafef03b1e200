package verify

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// System is the host a probe reports on: where its facts come from.
type System interface {
	// InterfaceOf names the network card holding ip.
	InterfaceOf(ip net.IP) (string, error)
	// ReadFile reads a file of /sys or /proc.
	ReadFile(path string) ([]byte, error)
	// Cores is the number of usable CPUs.
	Cores() int
}

// Host is the real System.
type Host struct{}

// InterfaceOf implements System from the kernel's address list.
func (Host) InterfaceOf(ip net.IP) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifs {
		addrs, err := i.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return i.Name, nil
			}
		}
	}
	return "", fmt.Errorf("no network card holds %s", ip)
}

// ReadFile implements System.
func (Host) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

// Cores implements System.
func (Host) Cores() int { return runtime.NumCPU() }

// ReadFacts reports the node whose cluster address is ip: its card's
// speed, duplex and MTU from /sys/class/net/<card>, its cores, and its
// memory from /proc/meminfo. A speed or duplex the driver does not give
// (virtio answers -1 or "unknown", or an error) is left 0 or "".
func ReadFacts(sys System, ip net.IP) (Facts, error) {
	var f Facts
	f.Name, _ = os.Hostname()
	ifname, err := sys.InterfaceOf(ip)
	if err != nil {
		return f, err
	}
	f.Interface = ifname
	read := func(name string) string {
		b, err := sys.ReadFile("/sys/class/net/" + ifname + "/" + name)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if v, err := strconv.Atoi(read("speed")); err == nil && v > 0 {
		f.SpeedMbit = v
	}
	if d := read("duplex"); d == "full" || d == "half" {
		f.Duplex = d
	}
	if f.MTU, err = strconv.Atoi(read("mtu")); err != nil {
		return f, fmt.Errorf("/sys/class/net/%s/mtu: %w", ifname, err)
	}
	f.Cores = sys.Cores()
	mi, err := sys.ReadFile("/proc/meminfo")
	if err != nil {
		return f, err
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			fs := strings.Fields(rest)
			if len(fs) > 0 {
				f.MemTotalKiB, err = strconv.ParseUint(fs[0], 10, 64)
			}
			if err != nil || len(fs) == 0 {
				return f, fmt.Errorf("/proc/meminfo: cannot read %q", line)
			}
		}
	}
	return f, nil
}
