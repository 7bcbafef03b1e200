package head

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// The NFS export of node1's root (or /home) goes to each node's own address,
// not to the whole subnet: on a shared LAN the subnet holds machines that
// never booted from node1, and NFS knows clients by address only. A node is
// added when the head serves its iPXE script (it has just done DHCP with the
// head, and its kernel will mount the root seconds later), and taken out
// when `clusterdebian prune` forgets it.

const (
	// exportApplyTimeout bounds one rewrite of the exports (exportfs -ra).
	exportApplyTimeout = 2 * time.Minute
	// exportWait bounds how long serving a script waits for its node's
	// export: iPXE waits that long for an answer anyway.
	exportWait = time.Minute
	// DefaultExportGrace: at a prune, a machine that got its script this
	// long ago and is not registered (it left at shutdown, or its boot
	// failed) loses its export too. Younger ones may still be booting.
	DefaultExportGrace = 15 * time.Minute
)

// ExportPath is what node1 exports for a root mode: its whole root for the
// shared root, /home for the RAM root.
func ExportPath(root contract.RootMode) string {
	if root == contract.RootRAM {
		return "/home"
	}
	return "/"
}

// ExportsText returns the exports(5) file for a root mode and the nodes'
// addresses, one line per node: node1's whole live root for the shared root
// (overlayfs, exportable thanks to overlay.nfs_export=Y overlay.index=Y on
// its kernel command line), read-write with root as root, since it is the
// nodes' root; only /home for the RAM root, with root squashed, since root
// on a node is not root on node1's files. No client: nothing is exported.
func ExportsText(root contract.RootMode, clients []netip.Addr) string {
	var b strings.Builder
	path, opts := "/", "rw,no_root_squash,no_subtree_check,fsid=1,async"
	if root == contract.RootRAM {
		path, opts = "/home", "rw,root_squash,no_subtree_check,fsid=2,sync"
	}
	fmt.Fprintf(&b, "# Written by clusterdebian head: %s to each node that booted from this head, and to nothing else.\n", path)
	for _, c := range clients {
		fmt.Fprintf(&b, "%s %s(%s)\n", path, c, opts)
	}
	return b.String()
}

// bootedNode is a machine that booted through the head: it has an export.
type bootedNode struct {
	MAC string     `json:"mac"`
	IP  netip.Addr `json:"ip"`
	// Since is when the head last served its script (or found it
	// registered).
	Since time.Time `json:"since"`
}

// bootedFile is the on-disk form of the export set.
type bootedFile struct {
	Version int          `json:"version"`
	Nodes   []bootedNode `json:"nodes"`
}

// exportSet is the nodes node1 exports to, kept in the state folder (so
// that a restarted head keeps exporting to the nodes that run from it) and
// handed to the NFS server through System.Export. Changes are applied by
// one goroutine at a time, each run taking every change made before it: a
// room of machines booting at once costs a few runs of exportfs, not one
// each.
type exportSet struct {
	path  string // state file; "" keeps the set in memory
	root  contract.RootMode
	sys   System
	log   *slog.Logger
	grace time.Duration
	now   func() time.Time

	mu       sync.Mutex
	nodes    map[string]bootedNode // by MAC
	gen      uint64                // changes made
	applied  uint64                // changes the NFS server and the file have
	running  bool
	done     chan struct{} // closed, and replaced, whenever applied moves
	lastText string        // what the NFS server was last given
	// cores is node1's CPU count, and lastThreads the nfsd thread count
	// last asked for (NFSDThreads).
	cores       int
	lastThreads int
}

// newExportSet loads the set saved at path (none yet is fine). A damaged
// file is set aside as <path>.corrupt-<time>, and the set starts empty.
func newExportSet(path string, root contract.RootMode, sys System, log *slog.Logger) (*exportSet, error) {
	e := &exportSet{path: path, root: root, sys: sys, log: log, grace: DefaultExportGrace, now: time.Now,
		nodes: map[string]bootedNode{}, done: make(chan struct{}), cores: runtime.NumCPU()}
	if path == "" {
		return e, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return e, nil
	}
	if err != nil {
		return nil, err
	}
	var f bootedFile
	if err := json.Unmarshal(data, &f); err != nil {
		kept, serr := atomicfile.SetAside(path, time.Now())
		if serr != nil {
			return nil, fmt.Errorf("%s is damaged (%v), and it cannot be set aside: %w", path, err, serr)
		}
		log.Error("booted nodes file is damaged: set aside, starting without it; registered nodes are exported again from the registry, the others when they boot next",
			"file", path, "kept_as", kept, "err", err)
		return e, nil
	}
	for _, n := range f.Nodes {
		mac, err := contract.NormalizeMAC(n.MAC)
		if err != nil || !n.IP.Is4() {
			log.Warn("booted nodes file: skipping a bad entry", "file", path, "mac", n.MAC, "ip", n.IP)
			continue
		}
		n.MAC = mac
		e.nodes[mac] = n
	}
	return e, nil
}

// clients returns the exported addresses, sorted. e.mu must be held.
func (e *exportSet) clients() []netip.Addr {
	var out []netip.Addr
	for _, n := range e.nodes {
		out = append(out, n.IP)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// Clients returns the addresses node1 exports to, sorted.
func (e *exportSet) Clients() []netip.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.clients()
}

// put records that mac booted at ip, now; e.mu must be held. The change
// counts (gen) even when only the time moved, so that the file keeps it.
func (e *exportSet) put(mac string, ip netip.Addr, since time.Time) {
	e.nodes[mac] = bootedNode{MAC: mac, IP: ip, Since: since}
	e.gen++
}

// add records that the machine with mac booted from the head at ip and
// returns the change to wait for (wait) before its kernel may mount.
func (e *exportSet) add(mac string, ip netip.Addr) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if old, ok := e.nodes[mac]; ok && old.IP != ip {
		e.log.Info("NFS: a node's address changed", "mac", mac, "old_ip", old.IP, "ip", ip)
	}
	e.put(mac, ip, e.now())
	e.kick()
	return e.gen
}

// sync adds the registered nodes the set lacks (or has at another address):
// the registry is what a head of an earlier version knew. Nodes are not
// removed here: a node that leaves at shutdown still has its root mounted
// until it powers off.
func (e *exportSet) sync(ns []registry.Node, subnet netip.Prefix) {
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := false
	for _, n := range ns {
		ip, err := netip.ParseAddr(n.IP)
		if n.Role != registry.RoleNode || err != nil || !subnet.Contains(ip) {
			continue
		}
		if old, ok := e.nodes[n.MAC]; ok && old.IP == ip {
			continue
		}
		e.put(n.MAC, ip, e.now())
		changed = true
	}
	if changed {
		e.kick()
	}
}

// prune takes out the nodes a prune removed from the registry, unless
// they are registered again (now), and the machines that are not
// registered and booted more than the grace time ago: they left, or never
// came up. It returns the addresses that lost
// their export.
func (e *exportSet) prune(gone, registered []registry.Node) []netip.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	keep := map[string]bool{}
	for _, n := range registered {
		keep[n.MAC] = true
	}
	drop := map[string]bool{}
	for _, n := range gone {
		drop[n.MAC] = true
	}
	limit := e.now().Add(-e.grace)
	var removed []netip.Addr
	for mac, n := range e.nodes {
		// A pruned node registered again since (its heartbeat came back
		// between the prune and this call) is alive: it keeps the export
		// its mounted root depends on.
		if !keep[mac] && (drop[mac] || n.Since.Before(limit)) {
			delete(e.nodes, mac)
			removed = append(removed, n.IP)
		}
	}
	if len(removed) > 0 {
		e.gen++
		e.kick()
	}
	slices.SortFunc(removed, netip.Addr.Compare)
	return removed
}

// kick starts the applier unless it runs. e.mu must be held.
func (e *exportSet) kick() {
	if e.running || e.applied >= e.gen {
		return
	}
	e.running = true
	go e.run()
}

// run applies changes until none is left: the state file first, then the
// NFS server (unless the exports are what it has), whose exportfs -ra
// reads the whole file anyway. A failure is logged; the next change tries
// again.
func (e *exportSet) run() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.applied < e.gen {
		gen, text, saved := e.gen, ExportsText(e.root, e.clients()), e.snapshot()
		unchanged := text == e.lastText
		e.mu.Unlock()
		if err := e.save(saved); err != nil {
			e.log.Error("cannot save the exported nodes: a restarted head would not export to them", "file", e.path, "err", err)
		}
		var err error
		if !unchanged {
			ctx, cancel := context.WithTimeout(context.Background(), exportApplyTimeout)
			err = e.sys.Export(ctx, text)
			cancel()
		}
		e.mu.Lock()
		if err != nil {
			e.log.Error("NFS export failed: nodes cannot mount "+ExportPath(e.root), "file", ExportsFile, "err", err)
			e.lastText = "" // try again at the next change
		} else if !unchanged {
			e.lastText = text
			e.log.Info("NFS: exported "+ExportPath(e.root)+" to the nodes that booted from this head", "nodes", len(e.nodes), "file", ExportsFile)
			e.threads(len(e.nodes))
		}
		e.applied = gen
		close(e.done)
		e.done = make(chan struct{})
	}
	e.running = false
}

// threads has the NFS server run NFSDThreads for nodes exported nodes, and
// logs a change. A server that is not running, or a kernel without nfsd,
// is logged at debug level once per change of the wanted count (exports
// work once it runs, with its own count until the next change); other
// failures are warnings. e.mu must
// be held; the write is a single small sysfs-like write, not worth
// dropping the lock for.
func (e *exportSet) threads(nodes int) {
	want := NFSDThreads(e.cores, nodes)
	if want == e.lastThreads {
		return
	}
	e.lastThreads = want
	ctx, cancel := context.WithTimeout(context.Background(), exportApplyTimeout)
	defer cancel()
	was, err := e.sys.SetNFSDThreads(ctx, want)
	switch {
	case errors.Is(err, errNFSDNotRunning) || errors.Is(err, fs.ErrNotExist):
		e.log.Debug("NFS: nfsd thread count left as it is", "want", want, "err", err)
	case err != nil:
		e.log.Warn("NFS: cannot set the nfsd thread count for the cluster's size; a boot storm may queue on the server's own", "want", want, "err", err)
	case was != want:
		e.log.Info("NFS: nfsd threads set for the cluster's size", "threads", want, "was", was, "nodes", nodes, "cores", e.cores)
	}
}

// snapshot is the set in file form. e.mu must be held.
func (e *exportSet) snapshot() []bootedNode {
	out := make([]bootedNode, 0, len(e.nodes))
	for _, n := range e.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b bootedNode) int { return a.IP.Compare(b.IP) })
	return out
}

func (e *exportSet) save(nodes []bootedNode) error {
	if e.path == "" {
		return nil
	}
	data, err := json.MarshalIndent(bootedFile{Version: 1, Nodes: nodes}, "", "  ")
	if err != nil {
		return err
	}
	// Root's only, as the rest of the state folder.
	return atomicfile.Write(e.path, append(data, '\n'), 0o600)
}

// wait returns once change gen (from add, or the latest) is applied, or
// when ctx ends.
func (e *exportSet) wait(ctx context.Context, gen uint64) error {
	for {
		e.mu.Lock()
		if e.applied >= gen {
			e.mu.Unlock()
			return nil
		}
		done := e.done
		e.kick()
		e.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// settle waits until the changes made so far are applied (the state file
// written, the NFS server told), or ctx ends: at the head's stop, so that
// no write into the state folder outlives it.
func (e *exportSet) settle(ctx context.Context) error {
	e.mu.Lock()
	gen := e.gen
	e.mu.Unlock()
	return e.wait(ctx, gen)
}

// apply applies every change so far and waits for it: at start, so that the
// nodes running from this head keep their root across its restart.
func (e *exportSet) apply(ctx context.Context) error {
	e.mu.Lock()
	e.gen++ // the NFS server may hold anything (an older head's lines)
	gen := e.gen
	e.kick()
	e.mu.Unlock()
	return e.wait(ctx, gen)
}
