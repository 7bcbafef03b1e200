package head

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcpclient"
	"github.com/clusterdebian/clusterdebian/internal/uplink"
)

// fakeHostname is the fake machine's host name.
const fakeHostname = "testhost"

// fakeSystem is a machine for tests: it records every effect the head asks
// for. Its files are under root. The network part either lives in memory
// (links, addrs, macs, routes, DHCP servers and a DHCP client) or, when
// network is set, is done by network, which a test runs inside a network
// namespace of its own; then physical names interfaces to report as
// physical NICs, so that the head's choice of interface can pick a veth.
// What would reach beyond the namespace (the system's DHCP client, its
// resolv.conf, the login banner) is never delegated: those are recorded,
// and the resolvers read and written under root.
type fakeSystem struct {
	root     string
	network  System
	physical map[string]bool

	mu     sync.Mutex
	links  []Link
	addrs  map[string][]IfAddr
	macs   map[string]net.HardwareAddr
	routes []uplink.Route
	// servers are the other DHCP servers that answer a probe, by
	// interface; client makes the DHCP client of the in-memory network.
	servers map[string]netip.Addr
	client  func(iface, hostname string) (dhcpclient.Exchanger, error)
	// released is what ReleaseInterface reports.
	released bool
	overlay  bool
	recorded []string
	// fsIDs gives paths a file system of their own (FileSystemID); other
	// paths are on the machine's real ones.
	fsIDs map[string]uint64
	// exportGate, when set, holds every Export until a value is received
	// from it (after recording the call); exportErr fails them.
	exportGate chan struct{}
	exportErr  error
}

func newFakeSystem(root string) *fakeSystem {
	return &fakeSystem{root: root, overlay: true, addrs: map[string][]IfAddr{}, macs: map[string]net.HardwareAddr{}, servers: map[string]netip.Addr{}}
}

func (f *fakeSystem) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recorded = append(f.recorded, fmt.Sprintf(format, args...))
}

// calls returns what the head asked the machine to do, in order.
func (f *fakeSystem) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.recorded)
}

func (f *fakeSystem) Root() string { return f.root }

func (f *fakeSystem) Links() ([]Link, error) {
	if f.network == nil {
		f.mu.Lock()
		defer f.mu.Unlock()
		return slices.Clone(f.links), nil
	}
	links, err := f.network.Links()
	for i := range links {
		links[i].Physical = links[i].Physical || f.physical[links[i].Name]
	}
	return links, err
}

func (f *fakeSystem) LinkUp(ctx context.Context, iface string) error {
	f.record("link up %s", iface)
	if f.network != nil {
		return f.network.LinkUp(ctx, iface)
	}
	return nil
}

func (f *fakeSystem) Addrs(iface string) ([]IfAddr, error) {
	if f.network != nil {
		return f.network.Addrs(iface)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.addrs[iface]
	if !ok {
		return nil, fmt.Errorf("no interface %s", iface)
	}
	return slices.Clone(a), nil
}

func (f *fakeSystem) AddAddr(ctx context.Context, iface string, addr netip.Prefix) error {
	f.record("addr add %s %s", iface, addr)
	if f.network != nil {
		return f.network.AddAddr(ctx, iface, addr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[iface] = append(f.addrs[iface], IfAddr{Prefix: addr})
	return nil
}

func (f *fakeSystem) SetLeaseAddr(ctx context.Context, iface string, addr netip.Prefix, lifetime time.Duration) error {
	f.record("lease addr %s %s", iface, addr)
	if f.network != nil {
		return f.network.SetLeaseAddr(ctx, iface, addr, lifetime)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[iface] = slices.DeleteFunc(f.addrs[iface], func(a IfAddr) bool { return a.Prefix == addr })
	f.addrs[iface] = append(f.addrs[iface], IfAddr{Prefix: addr, Dynamic: true})
	return nil
}

func (f *fakeSystem) DelAddr(ctx context.Context, iface string, addr netip.Prefix) error {
	f.record("addr del %s %s", iface, addr)
	if f.network != nil {
		return f.network.DelAddr(ctx, iface, addr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[iface] = slices.DeleteFunc(f.addrs[iface], func(a IfAddr) bool { return a.Prefix == addr })
	return nil
}

func (f *fakeSystem) DefaultRoutes() ([]uplink.Route, error) {
	if f.network != nil {
		return f.network.DefaultRoutes()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.routes), nil
}

func (f *fakeSystem) AddDefaultRoute(ctx context.Context, iface string, router netip.Addr) error {
	f.record("route add default via %s dev %s", router, iface)
	if f.network != nil {
		return f.network.AddDefaultRoute(ctx, iface, router)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes = append(f.routes, uplink.Route{Interface: iface, Gateway: router})
	return nil
}

func (f *fakeSystem) ProbeDHCP(ctx context.Context, iface string) (netip.Addr, bool, error) {
	f.record("probe %s", iface)
	if f.network != nil {
		return f.network.ProbeDHCP(ctx, iface)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.servers[iface]
	return s, ok, nil
}

func (f *fakeSystem) ReleaseInterface(_ context.Context, iface string) (bool, error) {
	f.record("release %s", iface)
	return f.released, nil
}

func (f *fakeSystem) DHCPClient(iface, hostname string) (dhcpclient.Exchanger, error) {
	if f.network != nil {
		return f.network.DHCPClient(iface, hostname)
	}
	if f.client == nil {
		return nil, fmt.Errorf("no DHCP client on %s", iface)
	}
	return f.client(iface, hostname)
}

func (f *fakeSystem) Resolvers() ([]netip.Addr, error) { return resolversIn(f.root) }

func (f *fakeSystem) SetResolvers(_ context.Context, servers []netip.Addr, domain, comment string) error {
	f.record("resolvers %v", servers)
	if err := os.MkdirAll(filepath.Join(f.root, "etc"), 0o755); err != nil {
		return err
	}
	return writeResolvers(f.root, servers, domain, comment)
}

// ApplyNAT records the ruleset; in a namespace of the test's own it loads
// it there too (nft and ip_forward are per network namespace).
func (f *fakeSystem) ApplyNAT(ctx context.Context, ruleset string, forward bool) error {
	f.record("nat forward=%v %s", forward, ruleset)
	if f.network != nil {
		return f.network.ApplyNAT(ctx, ruleset, forward)
	}
	return nil
}

func (f *fakeSystem) RefreshBanner(context.Context) error {
	f.record("banner")
	return nil
}

func (f *fakeSystem) HardwareAddr(iface string) (net.HardwareAddr, error) {
	if f.network != nil {
		return f.network.HardwareAddr(iface)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if hw, ok := f.macs[iface]; ok {
		return hw, nil
	}
	return nil, fmt.Errorf("no interface %s", iface)
}

func (f *fakeSystem) Hostname() (string, error) { return fakeHostname, nil }

func (f *fakeSystem) OverlayNFSExport() (bool, error) { return f.overlay, nil }

func (f *fakeSystem) Export(_ context.Context, exports string) error {
	f.record("export %s", exports)
	f.mu.Lock()
	gate, err := f.exportGate, f.exportErr
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return err
}

func (f *fakeSystem) SetNFSDThreads(_ context.Context, n int) (int, error) {
	f.record("nfsd threads %d", n)
	return NFSDMinThreads, nil
}

// exportCalls returns the exports the head asked for, in order.
func (f *fakeSystem) exportCalls() []string {
	var out []string
	for _, c := range f.calls() {
		if e, ok := strings.CutPrefix(c, "export "); ok {
			out = append(out, e)
		}
	}
	return out
}

func (f *fakeSystem) ReloadSSH(context.Context) error {
	f.record("reload ssh")
	return nil
}

func (f *fakeSystem) FileSystemID(path string) (uint64, error) {
	f.mu.Lock()
	id, ok := f.fsIDs[path]
	f.mu.Unlock()
	if ok {
		return id, nil
	}
	return statDev(path)
}
