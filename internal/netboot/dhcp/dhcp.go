// Package dhcp is ClusterDebian's DHCPv4 server for the cluster segment.
//
// The head runs it on the cluster NIC so that nodes can PXE boot. It can work
// as the segment's only DHCP server (ModeServer: it hands out addresses, keeps
// them stable per MAC across restarts and names each node node<N>), as a
// ProxyDHCP server beside an existing DHCP server (ModeProxy: it hands out no
// addresses, only boot information to PXE clients), or decide between the two
// by probing the segment for another server (ModeAuto).
//
// Packet encoding, the server socket and the test clients come from
// github.com/insomniacslk/dhcp; this package holds the policy: leases, boot
// file selection, proxy replies and mode selection.
package dhcp

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/sys/unix"
)

// Mode selects how the server behaves on the segment.
type Mode string

// The modes a Server can be configured with.
const (
	// ModeServer hands out addresses and boot information.
	ModeServer Mode = "server"
	// ModeProxy hands out only boot information (ProxyDHCP), beside another
	// DHCP server that owns the addresses.
	ModeProxy Mode = "proxy"
	// ModeAuto probes for another DHCP server at start and every
	// ProbeInterval and runs as proxy if one answers, else as server.
	ModeAuto Mode = "auto"
	// ModeOff disables the server: Serve opens no socket.
	ModeOff Mode = "off"
)

// Modes lists the modes, the default first.
var Modes = []Mode{ModeAuto, ModeServer, ModeProxy, ModeOff}

// ParseMode checks a mode: the one rule for cluster.toml's network.dhcp, the
// head's and New's. "" is the default, ModeAuto.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return ModeAuto, nil
	}
	for _, m := range Modes {
		if Mode(s) == m {
			return m, nil
		}
	}
	return "", fmt.Errorf("DHCP mode %q is not %q, %q, %q or %q", s, ModeAuto, ModeServer, ModeProxy, ModeOff)
}

// EventFunc receives a stage reached by the machine with the given MAC, for
// the head's status page. detail is a short human-readable note (boot file,
// URL). It is called from packet handling goroutines and must not block long.
type EventFunc func(mac net.HardwareAddr, ip netip.Addr, stage string, detail string)

// Stages reported through Config.OnEvent.
const (
	// StageDHCPOffered: the machine was sent an OFFER (address and/or boot file).
	StageDHCPOffered = "dhcp-offered"
	// StageDHCPAcked: the machine was sent an ACK (its lease or, in proxy
	// mode, its boot file is confirmed).
	StageDHCPAcked = "dhcp-acked"
	// StageDHCPRequested (proxy mode): a PXE client asked the other DHCP
	// server for the address reported with it. No reply is sent; the head
	// learns the address the node will boot with.
	StageDHCPRequested = "dhcp-requested"
)

// Defaults applied by New for zero Config fields.
const (
	DefaultLeaseTime     = 12 * time.Hour
	DefaultProbeInterval = 60 * time.Second
	// DefaultProbeTimeout is long enough for servers that ping an address
	// before offering it (dnsmasq, ISC dhcpd wait up to a few seconds).
	DefaultProbeTimeout = 5 * time.Second
	DefaultDomain       = "cluster"
	DefaultBIOSFile     = "undionly.kpxe"
	DefaultUEFIFile     = "snponly.efi"
)

// Config configures a Server. Zero values get the defaults documented per
// field.
type Config struct {
	// Interface is the cluster NIC; every socket is bound to it only
	// (SO_BINDTODEVICE), so no other network ever sees our answers.
	Interface string
	// ServerIP is the head's address on Interface (e.g. 10.99.0.1). It is
	// the server identifier, siaddr and TFTP server of every reply.
	ServerIP netip.Addr
	// Subnet is the cluster subnet (e.g. 10.99.0.0/24). Leases come from .2
	// up to the last usable address, minus ServerIP, Router and DNS.
	Subnet netip.Prefix
	// Mode is server, proxy, auto or off; empty means auto, the choice
	// that never fights another DHCP server.
	Mode Mode
	// Router is sent as option 3 if valid; the zero value sends none.
	Router netip.Addr
	// DNS servers are sent as option 6 if any.
	DNS []netip.Addr
	// Domain is sent as option 15; empty means "cluster".
	Domain string
	// LeaseFile is the JSON file where leases persist (written atomically:
	// temp file + rename). Empty keeps leases in memory only.
	LeaseFile string
	// LeaseTime is the lease duration; zero means 12h.
	LeaseTime time.Duration
	// HTTPBase is the head's HTTP boot server, e.g. "http://10.99.0.1";
	// empty means "http://" + ServerIP.
	HTTPBase string
	// BootFiles names the firmware-specific boot loaders.
	BootFiles BootFiles
	// ProbeInterval is how often auto mode re-probes; zero means 60s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long one probe waits for a foreign OFFER; zero
	// means 5s.
	ProbeTimeout time.Duration
	// Logger receives the per-MAC request/answer log; nil means slog.Default().
	Logger *slog.Logger
	// OnEvent, if set, is told about offers and acks per MAC.
	OnEvent EventFunc
}

// BootFiles names the boot loaders handed to PXE clients.
//
// BIOS PXE (arch 0) gets BIOS over TFTP; x86-64 UEFI PXE (arch 7, 9) gets UEFI
// over TFTP; x86-64 UEFI HTTP boot (arch 16, vendor class "HTTPClient") gets
// the URL HTTPBase+"/ipxe/"+UEFI. iPXE itself (user class "iPXE") gets its
// script URL HTTPBase+"/boot/"+<mac, lower-case colon hex>+".ipxe", so it
// never chainloads itself forever.
type BootFiles struct {
	// BIOS is the TFTP file for BIOS PXE; empty means "undionly.kpxe".
	BIOS string
	// UEFI is the TFTP file for x86-64 UEFI PXE; empty means "snponly.efi".
	UEFI string
}

// Lease is one address bound to one machine.
type Lease struct {
	// MAC is the client hardware address, lower-case colon hex.
	MAC string `json:"mac"`
	// IP is the leased address.
	IP netip.Addr `json:"ip"`
	// Hostname is the machine's name, from IP (contract.Naming).
	Hostname string `json:"hostname"`
	// Expires is when the lease runs out. Expired leases are kept, so the
	// machine gets the same address back, until the pool runs dry.
	Expires time.Time `json:"expires"`
}

// Server is a DHCPv4 server for one cluster NIC. Create it with New and run
// it with Serve.
type Server struct {
	cfg   Config
	log   *slog.Logger
	mask  net.IPMask
	bcast netip.Addr
	pool  *leaseStore
	// naming names clients after their addresses (option 12, host name).
	naming contract.Naming

	// mode is the effective mode (server or proxy; off if configured off).
	mode atomic.Pointer[Mode]
	// probeMAC is the stable random MAC auto mode probes with, so that a
	// foreign server sees one client rather than a new one every minute.
	probeMAC net.HardwareAddr
	// ownAddrs are the interface's addresses, captured when Serve starts;
	// offers from them are ours, not a foreign server's.
	ownAddrs []netip.Addr
	// probes counts finished auto-mode probes (tests wait on it).
	probes atomic.Int64
	// reprobe asks auto mode to probe now rather than at the next interval:
	// a client picked another server's offer, so one may have appeared.
	reprobe chan struct{}

	serving atomic.Bool
	// inflight lets Serve wait for packet handlers (which server4 runs in
	// their own goroutines) before it returns, so nothing touches the lease
	// file after Serve is done.
	inflight sync.RWMutex
	closed   bool
}

// New validates cfg, fills in defaults and loads the lease file.
func New(cfg Config) (*Server, error) {
	mode, err := ParseMode(string(cfg.Mode))
	if err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	cfg.Mode = mode
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{log: cfg.Logger.With("component", "dhcp")}
	if cfg.Mode == ModeOff {
		s.cfg = cfg
		s.setMode(ModeOff)
		return s, nil
	}
	if cfg.Interface == "" {
		return nil, errors.New("dhcp: no interface configured")
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if err := contract.CheckSubnet(cfg.Subnet); err != nil {
		return nil, fmt.Errorf("dhcp: subnet: %w", err)
	}
	s.bcast = lastAddr(cfg.Subnet)
	if !cfg.ServerIP.Is4() || !cfg.Subnet.Contains(cfg.ServerIP) ||
		cfg.ServerIP == cfg.Subnet.Addr() || cfg.ServerIP == s.bcast {
		return nil, fmt.Errorf("dhcp: server address %v is not a host address of %v", cfg.ServerIP, cfg.Subnet)
	}
	if cfg.Router.IsValid() && (!cfg.Router.Is4() || !cfg.Subnet.Contains(cfg.Router)) {
		// Clients cannot reach a gateway outside their own subnet.
		return nil, fmt.Errorf("dhcp: router %v is not in %v", cfg.Router, cfg.Subnet)
	}
	for _, d := range cfg.DNS {
		if !d.Is4() {
			return nil, fmt.Errorf("dhcp: DNS server %v is not an IPv4 address", d)
		}
	}
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	if cfg.LeaseTime < 0 || (cfg.LeaseTime > 0 && cfg.LeaseTime < time.Minute) {
		return nil, fmt.Errorf("dhcp: lease time %v is too short (minimum 1m)", cfg.LeaseTime)
	}
	if cfg.LeaseTime == 0 {
		cfg.LeaseTime = DefaultLeaseTime
	}
	if cfg.HTTPBase == "" {
		cfg.HTTPBase = "http://" + cfg.ServerIP.String()
	}
	cfg.HTTPBase = strings.TrimRight(cfg.HTTPBase, "/")
	if cfg.BootFiles.BIOS == "" {
		cfg.BootFiles.BIOS = DefaultBIOSFile
	}
	if cfg.BootFiles.UEFI == "" {
		cfg.BootFiles.UEFI = DefaultUEFIFile
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	s.cfg = cfg
	s.mask = net.CIDRMask(cfg.Subnet.Bits(), 32)

	exclude := map[netip.Addr]bool{cfg.ServerIP: true}
	if cfg.Router.IsValid() {
		exclude[cfg.Router] = true
	}
	for _, d := range cfg.DNS {
		exclude[d] = true
	}
	s.naming = contract.Naming{Subnet: cfg.Subnet, Head: cfg.ServerIP}
	pool, err := newLeaseStore(s.naming, exclude, cfg.LeaseFile, s.log)
	if err != nil {
		return nil, err
	}
	s.pool = pool

	s.probeMAC = randomMAC()
	s.reprobe = make(chan struct{}, 1)
	switch cfg.Mode {
	case ModeServer:
		s.setMode(ModeServer)
	default:
		// Auto starts as proxy until the first probe is done: a proxy never
		// hands out addresses, so it cannot clash with a server we have not
		// yet noticed.
		s.setMode(ModeProxy)
	}
	return s, nil
}

// Mode returns the effective mode: server or proxy (auto resolves to one of
// them; before its first probe has finished it behaves as proxy), or off.
func (s *Server) Mode() Mode { return *s.mode.Load() }

func (s *Server) setMode(m Mode) (changed bool) {
	old := s.mode.Swap(&m)
	return old == nil || *old != m
}

// Leases returns the leases handed out (bound at least once), expired ones
// included, ordered by address.
func (s *Server) Leases() []Lease {
	if s.pool == nil {
		return nil
	}
	return s.pool.list()
}

// Serve answers DHCP on the configured interface until ctx is done, then
// closes its sockets and returns nil. It returns an error if a socket cannot
// be opened or fails.
//
// All sockets are opened before Serve starts any goroutine, in the network
// namespace of the calling thread, so a caller may run Serve on a thread
// locked into another namespace (the tests do).
func (s *Server) Serve(ctx context.Context) error {
	if s.cfg.Mode == ModeOff {
		s.log.Info("dhcp disabled (mode off)")
		<-ctx.Done()
		return nil
	}
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("dhcp: Serve already running")
	}
	defer s.serving.Store(false)

	ifi, err := net.InterfaceByName(s.cfg.Interface)
	if err != nil {
		return fmt.Errorf("dhcp: interface %s: %w", s.cfg.Interface, err)
	}
	s.ownAddrs = interfaceAddrs(ifi)
	hasServerIP := false
	for _, a := range s.ownAddrs {
		hasServerIP = hasServerIP || a == s.cfg.ServerIP
	}
	if !hasServerIP {
		// Not fatal: the address may be added later. But replies would leave
		// with another source address, which some PXE ROMs reject.
		s.log.Warn("server address is not configured on the interface", "iface", s.cfg.Interface, "server_ip", s.cfg.ServerIP, "addrs", s.ownAddrs)
	}

	var conns []net.PacketConn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	c67, err := server4.NewIPv4UDPConn(s.cfg.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		return fmt.Errorf("dhcp: listen on %s port 67: %w", s.cfg.Interface, err)
	}
	// A rack powered on at once sends its DISCOVERs within milliseconds; the
	// default buffer (~200 KiB, some 150 requests) would drop the rest and
	// leave those machines waiting for their retransmission, seconds later.
	setRcvBuf(c67, serverRcvBuf)
	conns = append(conns, c67)
	ports := map[net.PacketConn]int{c67: dhcpv4.ServerPort}
	if s.cfg.Mode != ModeServer {
		// PXE clients that got a ProxyDHCP offer ask for their boot file on
		// port 4011; a pure server never sends such offers.
		c4011, err := server4.NewIPv4UDPConn(s.cfg.Interface, &net.UDPAddr{Port: pxePort})
		if err != nil {
			closeAll()
			return fmt.Errorf("dhcp: listen on %s port %d: %w", s.cfg.Interface, pxePort, err)
		}
		conns = append(conns, c4011)
		ports[c4011] = pxePort
	}
	var probeConn net.PacketConn
	if s.cfg.Mode == ModeAuto {
		probeConn, err = openClientConn(ifi)
		if err != nil {
			closeAll()
			return fmt.Errorf("dhcp: open probe socket on %s: %w", s.cfg.Interface, err)
		}
		conns = append(conns, probeConn)
	}

	s.inflight.Lock()
	s.closed = false
	s.inflight.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(conns))
	var wg sync.WaitGroup
	for conn, port := range ports {
		srv, err := server4.NewServer(s.cfg.Interface, nil, s.packetHandler(port), server4.WithConn(conn))
		if err != nil {
			closeAll()
			return fmt.Errorf("dhcp: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := srv.Serve()
			if ctx.Err() == nil {
				errc <- fmt.Errorf("dhcp: port %d: %w", port, err)
			}
		}()
	}
	if probeConn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.autoLoop(ctx, probeConn)
		}()
	}
	s.log.Info("dhcp serving", "iface", s.cfg.Interface, "server_ip", s.cfg.ServerIP, "subnet", s.cfg.Subnet,
		"configured_mode", s.cfg.Mode, "mode", s.Mode(), "http_base", s.cfg.HTTPBase,
		"bios", s.cfg.BootFiles.BIOS, "uefi", s.cfg.BootFiles.UEFI)

	var result error
	select {
	case <-ctx.Done():
	case result = <-errc:
	}
	cancel()
	closeAll()
	wg.Wait()
	// Wait for handlers still running and stop new ones.
	s.inflight.Lock()
	s.closed = true
	s.inflight.Unlock()
	s.log.Info("dhcp stopped", "iface", s.cfg.Interface)
	return result
}

// serverRcvBuf is the receive buffer of the server socket: room for a few
// thousand requests. Memory is only used while requests wait in it.
const serverRcvBuf = 4 << 20

// setRcvBuf raises a socket's receive buffer to size, past the
// net.core.rmem_max limit when allowed (CAP_NET_ADMIN, which a DHCP server
// has); failing that, as far as that limit allows.
func setRcvBuf(c syscall.Conn, size int) {
	sc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = sc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
	})
}

// packetHandler adapts respond to server4's handler signature.
func (s *Server) packetHandler(port int) server4.Handler {
	return func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		s.inflight.RLock()
		defer s.inflight.RUnlock()
		if s.closed {
			return
		}
		defer func() {
			// Last line of defence: one odd packet must not take down the
			// head. respond is fuzzed, so this should never fire.
			if r := recover(); r != nil {
				s.log.Error("dhcp handler panic", "panic", r)
			}
		}()
		upeer, _ := peer.(*net.UDPAddr)
		reply, dest := s.respond(m, port, upeer)
		if reply == nil {
			return
		}
		if _, err := conn.WriteTo(reply.ToBytes(), dest); err != nil {
			s.log.Warn("dhcp send failed", "mac", contract.MACString(m.ClientHWAddr), "to", dest, "err", err)
		}
	}
}

// autoLoop probes now and then every ProbeInterval, switching between server
// and proxy mode.
func (s *Server) autoLoop(ctx context.Context, pc net.PacketConn) {
	exclude := append([]netip.Addr{s.cfg.ServerIP}, s.ownAddrs...)
	t := time.NewTimer(0)
	defer t.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.reprobe:
			s.log.Info("auto mode: probing early, a client chose another DHCP server")
		}
		found, srv, err := probeOnce(ctx, pc, s.probeMAC, exclude, s.cfg.ProbeTimeout)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			// Keep the current mode: a failed probe proves nothing.
			s.log.Warn("dhcp probe failed; keeping mode", "mode", s.Mode(), "err", err)
		case found:
			if s.setMode(ModeProxy) || first {
				s.log.Warn("auto mode: another DHCP server answers on this segment; running as ProxyDHCP (boot information only, no addresses)",
					"foreign_server", srv, "iface", s.cfg.Interface)
			}
		default:
			if s.setMode(ModeServer) || first {
				s.log.Info("auto mode: no other DHCP server answered; running as full DHCP server", "iface", s.cfg.Interface)
			}
		}
		first = false
		s.probes.Add(1)
		t.Stop()
		t.Reset(s.cfg.ProbeInterval)
	}
}

func (s *Server) event(mac net.HardwareAddr, ip netip.Addr, stage, detail string) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(mac, ip, stage, detail)
	}
}

// lastAddr returns the broadcast address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func interfaceAddrs(ifi *net.Interface) []netip.Addr {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// randomMAC returns a random unicast, locally administered MAC.
func randomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	_, _ = rand.Read(m)
	m[0] = m[0]&^0x01 | 0x02
	return m
}
