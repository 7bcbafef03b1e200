package bootstorm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// The firmware's retransmit schedule: PXE ROMs wait 4, 8, 16, 32 s for a
// DHCP answer (PXE 2.1, 2.2.5) and iPXE about the same; a node that got
// none in dhcpPatience restarts its boot, as firmware reboots.
const (
	dhcpFirstWait = 4 * time.Second
	dhcpPatience  = 60 * time.Second
	// tftpTimeout is how long the TFTP client waits for a block before it
	// sends its last packet again.
	tftpTimeout = 2 * time.Second
	// restartPause is how long a node whose boot failed waits before it
	// starts again from DHCP.
	restartPause = 2 * time.Second
)

// PXE client identity (PXE 2.1): vendor class of a BIOS UNDI ROM, and
// iPXE's user class.
const (
	pxeVendorClass = "PXEClient:Arch:00000:UNDI:002001"
	ipxeUserClass  = "iPXE"
)

// Node is one simulated machine: a network namespace with an interface
// whose MAC is the machine's.
type Node struct {
	NS    *netns.NS
	Iface string
	MAC   net.HardwareAddr
	// OnLease, when set, is called after each DHCP ACK the node gets
	// (PXE and iPXE), for a benchmark that acts when half the nodes have
	// one.
	OnLease func(ip netip.Addr, ipxe bool)
	// OnRegistered, when set, is called once the node has registered.
	OnRegistered func()
	// LayerDir, when set, is the node's RAM file system for the RAM
	// root's layers: they are written there and, when the kernel command
	// line has the swarm on, served to other nodes from there (swarm.go).
	// Unset, the layers are checked and dropped, and the node serves none.
	LayerDir string

	peer *http.Server // the node's layer server while it runs
}

// Trace is what happened to one node during a storm.
type Trace struct {
	MAC string
	// Leases are the addresses of every ACK, in order, with the host
	// name (option 12) each carried.
	Leases []Lease
	// Name is the name the registry gave the node; Registered is when,
	// since the storm's start (zero: never).
	Name       string
	Registered time.Duration
	// DHCPRetransmits counts DHCP messages sent again for want of an
	// answer; TFTPRetransmits the TFTP packets sent again.
	DHCPRetransmits, TFTPRetransmits int
	// Restarts counts boots that failed and began again from DHCP, with
	// the errors that caused them.
	Restarts int
	Errors   []string
	// HTTPBytes and TFTPBytes are what the node received; PeerBytes the
	// part of HTTPBytes that peers sent (node1 redirected to them).
	HTTPBytes, TFTPBytes, PeerBytes int64
	// LayerRefetches counts layer copies refused (a wrong checksum, or a
	// transfer that broke off) and fetched again.
	LayerRefetches int
	// Heartbeats counts heartbeats the head accepted, HeartbeatErrors those
	// it did not.
	Heartbeats, HeartbeatErrors int
}

// Lease is one DHCP ACK a node got.
type Lease struct {
	IP       netip.Addr
	Hostname string
	IPXE     bool
}

// Boot runs the node's boot until it has registered, restarting it from
// DHCP after a failure, then heartbeats until ctx ends. start is the
// storm's start, for Trace.Registered. It returns when ctx ends.
func (n *Node) Boot(ctx context.Context, start time.Time) *Trace {
	tr := &Trace{MAC: contract.MACString(n.MAC)}
	defer n.stopPeer()
	var reg *registry.Client
	for reg == nil {
		var err error
		reg, err = n.bootOnce(ctx, tr)
		if err == nil {
			tr.Registered = time.Since(start)
			if n.OnRegistered != nil {
				n.OnRegistered()
			}
			break
		}
		if ctx.Err() != nil {
			tr.Errors = append(tr.Errors, "storm ended before registration: "+err.Error())
			return tr
		}
		tr.Restarts++
		tr.Errors = append(tr.Errors, err.Error())
		select {
		case <-ctx.Done():
			return tr
		case <-time.After(restartPause):
		}
	}
	tick := time.NewTicker(HeartbeatEvery)
	defer tick.Stop()
	for {
		_, err := reg.Heartbeat(ctx, tr.MAC, registry.Stats{Load1: 0.1, MemUsedKiB: 512 << 10, UptimeSec: 60})
		if ctx.Err() != nil {
			return tr
		}
		if err != nil {
			tr.HeartbeatErrors++
		} else {
			tr.Heartbeats++
		}
		select {
		case <-ctx.Done():
			return tr
		case <-tick.C:
		}
	}
}

// HeartbeatEvery is the simulated agent's heartbeat period.
const HeartbeatEvery = 5 * time.Second

// bootOnce is one boot from power-on to registration; it returns the
// registry client the node then heartbeats with.
func (n *Node) bootOnce(ctx context.Context, tr *Trace) (*registry.Client, error) {
	// A machine that boots again has lost what its RAM held.
	n.stopPeer()
	var conn net.PacketConn
	if err := n.NS.Do(func() error {
		var err error
		conn, err = nclient4.NewRawUDPConn(n.Iface, dhcpv4.ClientPort)
		return err
	}); err != nil {
		return nil, fmt.Errorf("dhcp socket: %w", err)
	}
	defer conn.Close()

	// 1. The PXE ROM: DHCP, then TFTP of the boot file the ACK names.
	guid := append([]byte{0}, n.MAC...)
	guid = append(guid, make([]byte, 17-len(guid))...)
	pxe := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(pxeVendorClass)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid)),
	}
	ack, err := n.dora(ctx, conn, tr, false, pxe...)
	if err != nil {
		return nil, fmt.Errorf("PXE DHCP: %w", err)
	}
	ip, mask := toAddr(ack.YourIPAddr), ack.SubnetMask()
	if err := n.setAddr(ctx, ip, mask); err != nil {
		return nil, err
	}
	server := ack.ServerIPAddr
	if toAddr(server).IsUnspecified() || server == nil {
		server = ack.ServerIdentifier()
	}
	if ack.BootFileName == "" {
		return nil, errors.New("PXE DHCP: the ACK names no boot file")
	}
	if err := n.tftpGet(net.JoinHostPort(server.String(), "69"), ack.BootFileName, tr); err != nil {
		return nil, fmt.Errorf("TFTP %s: %w", ack.BootFileName, err)
	}

	// 2. iPXE: DHCP again, as iPXE, for the script's URL.
	ipxe := append(pxe, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte(ipxeUserClass))))
	ack, err = n.dora(ctx, conn, tr, true, ipxe...)
	if err != nil {
		return nil, fmt.Errorf("iPXE DHCP: %w", err)
	}
	if got := toAddr(ack.YourIPAddr); got != ip {
		ip = got
		if err := n.setAddr(ctx, ip, ack.SubnetMask()); err != nil {
			return nil, err
		}
	}
	hc := n.HTTPClient()
	defer hc.CloseIdleConnections()
	script, err := n.get(ctx, hc, ack.BootFileName, nil)
	if err != nil {
		return nil, fmt.Errorf("iPXE script: %w", err)
	}
	tr.HTTPBytes += int64(len(script))
	boot, err := ParseScript(script)
	if err != nil {
		return nil, fmt.Errorf("iPXE script %s: %w", ack.BootFileName, err)
	}

	// 3. The boot gate: only what the script names, then the layers the
	// kernel line names for the RAM root (as live-boot's fetch= and our
	// initramfs hook do).
	for _, u := range boot.Fetch()[:2] {
		cw := &countWriter{}
		if _, err := n.get(ctx, hc, u, cw); err != nil {
			return nil, err
		}
		tr.HTTPBytes += cw.n
	}
	if boot.Cmdline.Root == contract.RootRAM {
		layers, err := n.fetchLayers(ctx, hc, boot, tr)
		if err != nil {
			return nil, err
		}
		// The agent serves the verified layers before it registers
		// (internal/agent: RAM root, swarm on, node1's sums known).
		if boot.Cmdline.Swarm && len(boot.Cmdline.LayerSums) > 0 && n.LayerDir != "" {
			if err := n.serveLayers(layers); err != nil {
				return nil, err
			}
		}
	}

	// 4. The agent: registration with the script's token.
	base, err := registry.HeadURL(boot.Cmdline.HTTPBase())
	if err != nil {
		return nil, err
	}
	// As the agent does: from a privileged port, as root on the node
	// (registry.FromNodeRoot).
	reg := registry.NewClient(base, boot.Cmdline.Token, n.rootHTTPClient())
	resp, err := reg.Register(ctx, registry.RegisterRequest{MAC: tr.MAC, IP: ip.String(), Cores: 4, MemTotalKiB: 8 << 20})
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	tr.Name = resp.Name
	return reg, nil
}

// setAddr gives the node's interface the leased address, as firmware
// does, in place of any earlier one.
func (n *Node) setAddr(ctx context.Context, ip netip.Addr, mask net.IPMask) error {
	if !ip.Is4() || mask == nil {
		return fmt.Errorf("DHCP ACK without address or subnet mask: %v %v", ip, mask)
	}
	bits, _ := mask.Size()
	if err := n.NS.IP(ctx, "addr", "flush", "dev", n.Iface); err != nil {
		return err
	}
	return n.NS.IP(ctx, "addr", "add", netip.PrefixFrom(ip, bits).String(), "dev", n.Iface)
}

// dora runs DISCOVER/OFFER/REQUEST/ACK with the firmware's retransmits
// and returns the ACK.
func (n *Node) dora(ctx context.Context, conn net.PacketConn, tr *Trace, ipxe bool, mods ...dhcpv4.Modifier) (*dhcpv4.DHCPv4, error) {
	mods = append([]dhcpv4.Modifier{dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize))}, mods...)
	discover, err := dhcpv4.NewDiscovery(n.MAC, mods...)
	if err != nil {
		return nil, err
	}
	offer, err := n.exchange(ctx, conn, tr, discover, func(m *dhcpv4.DHCPv4) bool {
		// An offer without an address is a proxyDHCP server's.
		return m.MessageType() == dhcpv4.MessageTypeOffer && !toAddr(m.YourIPAddr).IsUnspecified()
	})
	if err != nil {
		return nil, fmt.Errorf("no offer: %w", err)
	}
	request, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		return nil, err
	}
	sid := offer.ServerIdentifier()
	ack, err := n.exchange(ctx, conn, tr, request, func(m *dhcpv4.DHCPv4) bool {
		t := m.MessageType()
		return (t == dhcpv4.MessageTypeAck || t == dhcpv4.MessageTypeNak) && (sid == nil || sid.Equal(m.ServerIdentifier()))
	})
	if err != nil {
		return nil, fmt.Errorf("no ACK for %v: %w", offer.YourIPAddr, err)
	}
	if ack.MessageType() == dhcpv4.MessageTypeNak {
		return nil, fmt.Errorf("NAK for %v: %s", offer.YourIPAddr, ack.Message())
	}
	ip := toAddr(ack.YourIPAddr)
	tr.Leases = append(tr.Leases, Lease{IP: ip, Hostname: ack.HostName(), IPXE: ipxe})
	if n.OnLease != nil {
		n.OnLease(ip, ipxe)
	}
	return ack, nil
}

// exchange broadcasts msg and waits for an answer that match accepts,
// sending msg again after 4, 8, 16... seconds, and counting each resend.
func (n *Node) exchange(ctx context.Context, conn net.PacketConn, tr *Trace, msg *dhcpv4.DHCPv4, match func(*dhcpv4.DHCPv4) bool) (*dhcpv4.DHCPv4, error) {
	pkt := msg.ToBytes()
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	giveUp := time.Now().Add(dhcpPatience)
	buf := make([]byte, 2048)
	for wait, sent := dhcpFirstWait, 0; ; wait *= 2 {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(giveUp) {
			return nil, fmt.Errorf("no answer to %s in %v (%d sends)", msg.MessageType(), dhcpPatience, sent)
		}
		if sent > 0 {
			tr.DHCPRetransmits++
		}
		if _, err := conn.WriteTo(pkt, dest); err != nil {
			return nil, fmt.Errorf("send %s: %w", msg.MessageType(), err)
		}
		sent++
		deadline := earliest(time.Now().Add(wait), giveUp)
		for {
			// Short reads, so that a cancelled storm ends promptly.
			conn.SetReadDeadline(earliest(deadline, time.Now().Add(time.Second)))
			k, _, err := conn.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					if time.Now().Before(deadline) {
						continue
					}
					break
				}
				return nil, err
			}
			m, err := dhcpv4.FromBytes(buf[:k])
			if err != nil || m.OpCode != dhcpv4.OpcodeBootReply || m.TransactionID != msg.TransactionID ||
				!bytes.Equal(m.ClientHWAddr, n.MAC) || !match(m) {
				continue
			}
			return m, nil
		}
	}
}

// tftpGet fetches file from server over TFTP, counting retransmits.
func (n *Node) tftpGet(server, file string, tr *Trace) error {
	c, err := tftp.NewClient(server)
	if err != nil {
		return err
	}
	var resends atomic.Int64
	c.SetTimeout(tftpTimeout)
	c.SetRetries(5)
	c.SetBackoff(func(int) time.Duration { resends.Add(1); return 0 })
	c.SetBlockSize(1456) // iPXE's, for an Ethernet MTU
	defer func() { tr.TFTPRetransmits += int(resends.Load()) }()
	var wt io.WriterTo
	// The client opens its socket in Receive: in the node's namespace.
	if err := n.NS.Do(func() error {
		var err error
		wt, err = c.Receive(file, "octet")
		return err
	}); err != nil {
		return err
	}
	cw := &countWriter{}
	if _, err := wt.WriteTo(cw); err != nil {
		return err
	}
	tr.TFTPBytes += cw.n
	return nil
}

// HTTPClient returns a client whose connections are opened in the node's
// namespace.
func (n *Node) HTTPClient() *http.Client {
	tr := &http.Transport{
		DialContext:         n.dialIn((&net.Dialer{Timeout: 30 * time.Second}).DialContext),
		DisableCompression:  true,
		MaxIdleConnsPerHost: 2,
	}
	return &http.Client{Transport: tr}
}

// rootHTTPClient returns a client whose connections are opened in the
// node's namespace from a privileged port (registry.DialRootPort), one
// per request, as the node agent's.
func (n *Node) rootHTTPClient() *http.Client {
	tr := &http.Transport{DialContext: n.dialIn(registry.DialRootPort), DisableKeepAlives: true}
	return &http.Client{Transport: tr, Timeout: registry.DefaultClientTimeout}
}

// dialIn returns dial, run in the node's namespace, so that its sockets
// are the node's.
func (n *Node) dialIn(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := n.NS.Do(func() error {
			var err error
			c, err = dial(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// get fetches url into w, or returns the body when w is nil.
func (n *Node) get(ctx context.Context, hc *http.Client, url string, w io.Writer) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
	}
	if w == nil {
		return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
	_, err = io.Copy(w, resp.Body)
	if err != nil {
		err = fmt.Errorf("GET %s: %w", url, err)
	}
	return nil, err
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func toAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}

// BootSet is what an iPXE script tells a node to load.
type BootSet struct {
	Kernel, Initrd string // URLs
	// Cmdline is the kernel command line, parsed; FetchURL its fetch=
	// (RAM root), which contract.Cmdline does not keep.
	Cmdline  contract.Cmdline
	FetchURL string
}

// ParseScript reads an iPXE script's kernel and initrd lines, as iPXE
// would: "kernel URL params..." and "initrd URL". An error says which line
// is missing or bad.
func ParseScript(script []byte) (BootSet, error) {
	var b BootSet
	sc := bufio.NewScanner(bytes.NewReader(script))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "kernel":
			b.Kernel = f[1]
			var params []string
			for _, p := range f[2:] {
				if u, ok := strings.CutPrefix(p, "fetch="); ok {
					b.FetchURL = u
				}
				params = append(params, p)
			}
			c, err := contract.ParseCmdline(strings.Join(params, " "))
			if err != nil {
				return b, fmt.Errorf("kernel line: %w", err)
			}
			b.Cmdline = c
		case "initrd":
			b.Initrd = f[1]
		}
	}
	switch {
	case b.Kernel == "":
		return b, errors.New("no kernel line")
	case b.Initrd == "":
		return b, errors.New("no initrd line")
	case b.Cmdline.Token == "":
		return b, fmt.Errorf("kernel line has no %s", contract.ParamToken)
	case !b.Cmdline.Head.IsValid():
		return b, fmt.Errorf("kernel line has no %s", contract.ParamHead)
	case b.Cmdline.Root == contract.RootRAM && b.FetchURL == "":
		return b, errors.New("RAM root without fetch=")
	}
	return b, nil
}

// Fetch is every URL a node fetches over HTTP after the script: kernel,
// initrd, and for the RAM root the base layer (fetch=) and the other
// layers next to it (clusterdebian.layers, as the initramfs hook
// live-layers.sh builds their URLs).
func (b BootSet) Fetch() []string {
	urls := []string{b.Kernel, b.Initrd}
	if b.Cmdline.Root != contract.RootRAM {
		return urls
	}
	urls = append(urls, b.FetchURL)
	dir := b.FetchURL[:strings.LastIndexByte(b.FetchURL, '/')]
	for _, l := range b.Cmdline.Layers {
		urls = append(urls, dir+"/"+l)
	}
	return urls
}
