// Package dhcp is ClusterDebian's DHCPv4 server for the cluster segment.
//
// The head runs it on the cluster NIC so that nodes can PXE boot. It can work
// as the segment's only DHCP server (ModeServer: it hands out addresses, keeps
// them stable per MAC across restarts and names each node node<N>), as a
// ProxyDHCP server beside an existing DHCP server (ModeProxy: it hands out no
// addresses, only boot information to PXE clients), or decide between the two
// (ModeAuto).
//
// # Finding another DHCP server (auto mode)
//
// Two servers handing out addresses on one segment is the failure that must
// never happen; running as ProxyDHCP where we could have served costs only a
// message. So auto mode starts as ProxyDHCP and becomes a server only when
// nothing speaks against it, and a single sign of another server makes it a
// ProxyDHCP server for the rest of its life ("sticky"): whatever answered
// once may answer again, and flapping between modes would hand out addresses
// in the gaps. Evidence comes from three places, because no one of them is
// enough:
//
//   - The probe: a DISCOVER sent at start and every ProbeInterval. It comes
//     from the interface's own MAC, as any machine on the LAN would send it,
//     not from a made-up one: a server that answers only machines it knows
//     (dnsmasq --dhcp-ignore=tag:!known, ISC "deny unknown-clients") may
//     know this host, and an OFFER unicast to our own MAC reaches us even on
//     a switch.
//   - The segment itself: a raw socket sees every DHCP reply to port 68 that
//     reaches this NIC (all broadcast ones, which is what most PXE ROMs ask
//     for). Another server's OFFER, ACK or NAK is evidence; a ProxyDHCP
//     reply, which hands out no address, is not.
//   - Clients: a REQUEST names the server whose offer the client took
//     (option 54). A client that took another server's offer names it, and
//     REQUESTs are broadcast, so we see them whatever the other server
//     unicasts.
//
// A server that answers only known machines never answers a probe from an
// unknown one, so the probe alone cannot find it. Therefore auto mode, while
// acting as a server, does not answer a DISCOVER at once: it holds its OFFER
// for OfferDelay (1 s; PXE ROMs collect offers for about 4 s before they
// choose, so the delay costs no boot) and watches the segment meanwhile. If
// another server's OFFER shows up, ours is never sent. If that OFFER was
// unicast where we cannot see it, the client's broadcast REQUEST naming the
// other server gives it away at the next step, and from then on we hand out
// nothing. Evidence() tells the head what was seen, from which server and
// when; the log says it once per server.
//
// # No address offered twice (server mode)
//
// Before an address a machine does not hold is offered, it is checked: a
// machine the head knows holds it (Config.InUse, the registry, which still
// knows running nodes when the lease file was lost), or a host answers an ARP
// probe for it (RFC 5227: sender address 0.0.0.0; a host that ignores ping
// still answers ARP). Addresses found in use are held out of the pool for a
// while and the next is tried. The checks of a burst of DISCOVERs run
// concurrently. DHCPDECLINE takes an address out of the pool likewise.
//
// Packet encoding, the server socket and the test clients come from
// github.com/insomniacslk/dhcp; this package holds the policy: leases, boot
// file selection, proxy replies and mode selection.
package dhcp

import (
	"context"
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
	// ModeAuto runs as proxy while it looks for another DHCP server (the
	// probe at start), then as server unless one was found; any later sign
	// of another server makes it a proxy for good (see the package doc).
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
	DefaultBIOSFile     = contract.BIOSBootFile
	DefaultUEFIFile     = contract.UEFIPXEBootFile
	DefaultUEFIHTTPFile = contract.UEFIBootFile
	// DefaultOfferDelay is how long auto mode holds an OFFER back while it
	// watches for another server's: well under the ~4 s PXE ROMs wait for
	// offers, well over the time a server answers without a ping check.
	DefaultOfferDelay = time.Second
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
	// Known maps the MACs (contract.MACString) of machines the head knows
	// to run (its registry of nodes) to their addresses. At start, those
	// the lease file lacks (it was lost or damaged) get their address
	// leased again, so that they keep it, and their name.
	Known map[string]netip.Addr
	// LeaseTime is the lease duration; zero means 12h.
	LeaseTime time.Duration
	// HTTPBase is the head's HTTP boot server, e.g. "http://10.99.0.1";
	// empty means "http://" + ServerIP.
	HTTPBase string
	// BootFiles names the firmware-specific boot loaders.
	BootFiles BootFiles
	// ProbeInterval is how often auto mode, while acting as server,
	// probes again; zero means 60s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long one probe waits for a foreign OFFER; zero
	// means 5s.
	ProbeTimeout time.Duration
	// OfferDelay is how long auto mode, acting as server, holds an OFFER
	// back while it watches for another server's OFFER; zero means 1s,
	// negative sends at once.
	OfferDelay time.Duration
	// AddressCheck is how long the ARP check of an address waits for an
	// answer before the address is offered; zero means 500ms, negative
	// skips the ARP check (Config.InUse still applies).
	AddressCheck time.Duration
	// InUse, if set, reports whether ip is held by a machine other than
	// mac as far as the head knows (its registry of nodes): such addresses
	// are never offered, and a REQUEST for one from a machine we have no
	// lease for is refused. It is called from packet handlers, concurrently,
	// and must answer fast without blocking.
	InUse func(ip netip.Addr, mac net.HardwareAddr) bool
	// OnEvidence, if set, is called once for each other DHCP server seen
	// on the segment (see Server.Evidence), from a packet goroutine; it
	// must not block long.
	OnEvidence func(Evidence)
	// Logger receives the per-MAC request/answer log; nil means slog.Default().
	Logger *slog.Logger
	// OnEvent, if set, is told about offers and acks per MAC.
	OnEvent EventFunc
}

// BootFiles names the boot loaders handed to PXE clients.
//
// BIOS PXE (arch 0) gets BIOS over TFTP; x86-64 UEFI PXE (arch 7, 9) gets UEFI
// over TFTP; x86-64 UEFI HTTP boot (arch 16, vendor class "HTTPClient") gets
// the URL HTTPBase+"/ipxe/"+UEFIHTTP. iPXE itself (user class "iPXE") gets its
// script URL HTTPBase+"/boot/"+<mac, lower-case colon hex>+".ipxe", so it
// never chainloads itself forever.
type BootFiles struct {
	// BIOS is the TFTP file for BIOS PXE; empty means "undionly.kpxe".
	BIOS string
	// UEFI is the TFTP file for x86-64 UEFI PXE; empty means "shimx64.efi"
	// (contract.UEFIPXEBootFile: the Secure Boot chain).
	UEFI string
	// UEFIHTTP is the file under HTTPBase+"/ipxe/" for UEFI HTTP boot;
	// empty means "snponly.efi".
	UEFIHTTP string
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
	// ownMAC and ownAddrs are the interface's MAC and addresses, captured
	// when Serve starts: auto mode probes from ownMAC, and replies from
	// ownAddrs are ours, not a foreign server's.
	ownMAC   net.HardwareAddr
	ownAddrs []netip.Addr
	// probeXID is the transaction ID of the current probe
	// (dhcpv4.TransactionID), to tell answers to it from other OFFERs.
	probeXID atomic.Value
	// probes counts finished auto-mode probes (tests wait on it).
	probes atomic.Int64

	// evidence holds the first sighting of each other server; sticky is
	// set, and stickyc closed, when auto mode turns proxy for good.
	evMu     sync.Mutex
	evidence map[netip.Addr]Evidence
	sticky   bool
	stickyc  chan struct{}

	// ctx and arp are set by Serve before any handler runs (under the
	// inflight lock): the serving context and the ARP address checker (nil
	// when not serving or when the check is off).
	ctx context.Context
	arp addrChecker
	// withdrawn counts OFFERs auto mode held back and then never sent
	// (tests wait on it).
	withdrawn atomic.Int64

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
	s := &Server{log: cfg.Logger.With("component", "dhcp"), evidence: map[netip.Addr]Evidence{}, stickyc: make(chan struct{})}
	switch cfg.Mode {
	case ModeOff:
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
	if cfg.BootFiles.UEFIHTTP == "" {
		cfg.BootFiles.UEFIHTTP = DefaultUEFIHTTPFile
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.OfferDelay == 0 {
		cfg.OfferDelay = DefaultOfferDelay
	}
	if cfg.AddressCheck == 0 {
		cfg.AddressCheck = DefaultAddressCheck
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
	pool, err := newLeaseStore(s.naming, exclude, cfg.LeaseFile, cfg.Known, cfg.LeaseTime, s.log)
	if err != nil {
		return nil, err
	}
	s.pool = pool

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
// them: proxy before its first probe has finished and, for good, once
// another server has been seen; see Evidence), or off.
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
	s.ownMAC = ifi.HardwareAddr
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

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
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
	// The client-side socket watches the segment for other servers' replies
	// (and sends auto mode's probes). Auto mode cannot decide without it; the
	// other modes only lose the warning.
	watchConn, err := openClientConn(ifi)
	if err != nil {
		if s.cfg.Mode == ModeAuto {
			closeAll()
			return fmt.Errorf("dhcp: open probe socket on %s: %w", s.cfg.Interface, err)
		}
		s.log.Warn("cannot watch the segment for other DHCP servers", "iface", s.cfg.Interface, "err", err)
		watchConn = nil
	} else {
		conns = append(conns, watchConn)
	}
	var arp addrChecker
	if s.cfg.Mode != ModeProxy && s.cfg.AddressCheck > 0 {
		c, err := openARP(ctx, ifi, s.cfg.AddressCheck)
		if err != nil {
			closeAll()
			return fmt.Errorf("dhcp: open ARP socket on %s (to check addresses before offering them): %w", s.cfg.Interface, err)
		}
		arp = c
	}

	s.inflight.Lock()
	s.closed = false
	s.ctx = ctx
	s.arp = arp
	s.inflight.Unlock()

	errc := make(chan error, len(conns))
	var wg sync.WaitGroup
	for conn, port := range ports {
		srv, err := server4.NewServer(s.cfg.Interface, nil, s.packetHandler(port), server4.WithConn(conn))
		if err != nil {
			cancel()
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
	if watchConn != nil {
		wg.Go(func() { s.watch(ctx, watchConn) })
		if s.cfg.Mode == ModeAuto {
			wg.Go(func() { s.autoLoop(ctx, watchConn) })
		}
	}
	s.log.Info("dhcp serving", "iface", s.cfg.Interface, "server_ip", s.cfg.ServerIP, "subnet", s.cfg.Subnet,
		"configured_mode", s.cfg.Mode, "mode", s.Mode(), "http_base", s.cfg.HTTPBase,
		"bios", s.cfg.BootFiles.BIOS, "uefi", s.cfg.BootFiles.UEFI, "uefi_http", s.cfg.BootFiles.UEFIHTTP)

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
	s.arp = nil
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

// autoLoop probes at once and then every ProbeInterval, on the watch
// socket pc (the watcher sees the answers). The first probe that ends
// without evidence of another server makes auto mode a server; evidence,
// from the probe or from anywhere else, makes it a proxy for good (see
// noteForeign), and then probing stops.
func (s *Server) autoLoop(ctx context.Context, pc net.PacketConn) {
	t := time.NewTimer(0)
	defer t.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stickyc:
			return
		case <-t.C:
		}
		err := s.probe(ctx, pc)
		switch {
		case ctx.Err() != nil || s.stickyProxy():
			s.probes.Add(1)
			return
		case err != nil:
			// Keep the current mode: a failed probe proves nothing.
			s.log.Warn("dhcp probe failed; keeping mode", "mode", s.Mode(), "err", err)
		default:
			if s.setMode(ModeServer) || first {
				s.log.Info("auto mode: no other DHCP server seen; running as full DHCP server "+
					"(offers are held back briefly while the segment is watched)", "iface", s.cfg.Interface)
			}
		}
		first = false
		s.probes.Add(1)
		t.Reset(s.cfg.ProbeInterval)
	}
}

// probe broadcasts a DISCOVER from the interface's own MAC on pc, once a
// second for ProbeTimeout, and returns early if evidence of another server
// turns up (the watcher reads the answers).
func (s *Server) probe(ctx context.Context, pc net.PacketConn) error {
	discover, err := newProbe(s.ownMAC)
	if err != nil {
		return err
	}
	s.probeXID.Store(discover.TransactionID)
	pkt := discover.ToBytes()
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	deadline := time.NewTimer(s.cfg.ProbeTimeout)
	defer deadline.Stop()
	resend := time.NewTicker(time.Second)
	defer resend.Stop()
	for {
		// Resend once a second: one lost frame must not hide a server.
		if _, err := pc.WriteTo(pkt, dest); err != nil {
			return fmt.Errorf("dhcp probe: send: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stickyc:
			return nil
		case <-deadline.C:
			return nil
		case <-resend.C:
		}
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
