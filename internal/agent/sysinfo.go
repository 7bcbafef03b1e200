package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// Endpoint is how this machine reaches the head: the interface, its
// address and its MAC. That interface is the node's identity in the
// registry, whatever other networks the machine is on.
type Endpoint struct {
	Interface string
	IP        netip.Addr
	MAC       net.HardwareAddr
	// Subnet is the network of IP on Interface: the cluster subnet.
	Subnet netip.Prefix
}

// LocalEndpoint finds the interface this machine reaches headURL through.
// It "dials" the head over UDP, which sends nothing but makes the kernel
// choose the route and source address, then finds the interface holding
// that address.
func LocalEndpoint(ctx context.Context, headURL string) (Endpoint, error) {
	var ep Endpoint
	hostport, err := headHostPort(headURL)
	if err != nil {
		return ep, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp4", hostport)
	if err != nil {
		return ep, fmt.Errorf("no route to the head %s: %w", hostport, err)
	}
	local := conn.LocalAddr().(*net.UDPAddr)
	conn.Close()
	ip, ok := netip.AddrFromSlice(local.IP)
	if !ok {
		return ep, fmt.Errorf("odd local address %v", local.IP)
	}
	ep.IP = ip.Unmap()
	ifaces, err := net.Interfaces()
	if err != nil {
		return ep, err
	}
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if x, ok := netip.AddrFromSlice(n.IP); ok && x.Unmap() == ep.IP {
				ep.Interface = ifc.Name
				ep.MAC = ifc.HardwareAddr
				ones, _ := n.Mask.Size()
				ep.Subnet = netip.PrefixFrom(ep.IP, ones).Masked()
				return ep, nil
			}
		}
	}
	return ep, fmt.Errorf("no interface holds %s, the address used to reach the head", ep.IP)
}

// headHostPort returns host:port of the head's URL (port 80 by default).
func headHostPort(headURL string) (string, error) {
	u, err := url.Parse(headURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("head URL %q is not like http://10.99.0.1", headURL)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// MemTotalKiB returns MemTotal from proc/meminfo (proc is "/proc").
func MemTotalKiB(proc string) (uint64, error) {
	m, err := meminfo(proc)
	if err != nil {
		return 0, err
	}
	v, ok := m["MemTotal"]
	if !ok {
		return 0, errors.New("no MemTotal in meminfo")
	}
	return v, nil
}

// ReadStats reads what a heartbeat reports from proc ("/proc"): the
// 1-minute load average, memory in use (MemTotal - MemAvailable, what
// `free` calls used, so page cache does not count) and uptime.
func ReadStats(proc string) (registry.Stats, error) {
	var s registry.Stats
	var errs []error
	if data, err := os.ReadFile(filepath.Join(proc, "loadavg")); err != nil {
		errs = append(errs, err)
	} else if f := strings.Fields(string(data)); len(f) == 0 {
		errs = append(errs, errors.New("empty loadavg"))
	} else if s.Load1, err = strconv.ParseFloat(f[0], 64); err != nil {
		errs = append(errs, fmt.Errorf("loadavg: %w", err))
	}
	if m, err := meminfo(proc); err != nil {
		errs = append(errs, err)
	} else if total, avail := m["MemTotal"], m["MemAvailable"]; total >= avail {
		s.MemUsedKiB = total - avail
	}
	if data, err := os.ReadFile(filepath.Join(proc, "uptime")); err != nil {
		errs = append(errs, err)
	} else if f := strings.Fields(string(data)); len(f) == 0 {
		errs = append(errs, errors.New("empty uptime"))
	} else if up, err := strconv.ParseFloat(f[0], 64); err != nil {
		errs = append(errs, fmt.Errorf("uptime: %w", err))
	} else {
		s.UptimeSec = int64(up)
	}
	return s, errors.Join(errs...)
}

// meminfo parses proc/meminfo into KiB values.
func meminfo(proc string) (map[string]uint64, error) {
	f, err := os.Open(filepath.Join(proc, "meminfo"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseUint(fields[0], 10, 64); err == nil {
			m[key] = v
		}
	}
	return m, sc.Err()
}
