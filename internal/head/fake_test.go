package head

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// fakeHostname is the fake machine's host name.
const fakeHostname = "testhost"

// fakeSystem is a machine for tests: it records every effect the head asks
// for. Its files are under root. The network part either lives in memory
// (links, addrs, macs) or, when network is set, is done by network, which a
// test runs inside a network namespace of its own; then physical names
// interfaces to report as physical NICs, so that the head's choice of
// interface can pick a veth.
type fakeSystem struct {
	root     string
	network  System
	physical map[string]bool

	mu       sync.Mutex
	links    []Link
	addrs    map[string][]netip.Prefix
	macs     map[string]net.HardwareAddr
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
	return &fakeSystem{root: root, overlay: true, addrs: map[string][]netip.Prefix{}, macs: map[string]net.HardwareAddr{}}
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

func (f *fakeSystem) Addrs(iface string) ([]netip.Prefix, error) {
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
	f.addrs[iface] = append(f.addrs[iface], addr)
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
