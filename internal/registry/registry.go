// Package registry is the head's list of cluster nodes: who joined, under
// which name, and who is alive. Node agents register at boot, heartbeat
// every few seconds and leave at a clean shutdown (NewAPI is the HTTP
// side, Client its one client, for the agent and the commands); the head
// sweeps nodes that stopped heartbeating into the "down" state. Every
// membership change is saved to a JSON file, so that a restarted head
// keeps the same names and does not list a node twice, and reported to a
// callback, which rewrites /etc/hosts and the MPI hostfiles.
//
// A node's name follows from its address by the cluster's naming rule
// (contract.Naming), the same rule the DHCP server and the node's initramfs
// use; the registry accepts only addresses that the rule can name, that is
// host addresses of the cluster subnet.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// Roles and states of a node.
const (
	RoleHead  = "head"
	RoleNode  = "node"
	StateUp   = "up"
	StateDown = "down"
	// StateJoining: the node registered and got its name and host
	// certificate, but its sshd does not answer yet (sshd starts only
	// after the certificate is written). It is in /etc/hosts, not in the
	// hostfiles: mpirun would be refused on port 22.
	StateJoining = "joining"
)

// MissedHeartbeats is how many heartbeat intervals may pass without one
// before Sweep marks a node down: one lost packet or a busy head must not
// take a node out of the MPI hostfile.
const MissedHeartbeats = 3

// Errors the registry returns; the API maps them to HTTP statuses.
var (
	// ErrUnknownNode: no node with that MAC is registered (the head
	// forgot it, or it left); the agent answers by registering again.
	ErrUnknownNode = errors.New("unknown node: register first")
	// ErrInvalid wraps every validation error of a request.
	ErrInvalid = errors.New("invalid request")
	// ErrConflict: the request would take the head's name or address.
	ErrConflict = errors.New("conflict")
	// ErrSave wraps a failure to save the registry file (see Flush);
	// the change itself is in effect, and the next change tries again.
	ErrSave = errors.New("saving node registry")
)

// Node is one registered machine, as the status command and the API show it.
type Node struct {
	Name        string    `json:"name"`
	MAC         string    `json:"mac"`
	IP          string    `json:"ip"`
	Role        string    `json:"role"` // RoleHead or RoleNode
	Cores       int       `json:"cores"`
	MemTotalKiB uint64    `json:"mem_total_kib"`
	MemUsedKiB  uint64    `json:"mem_used_kib"`
	Load1       float64   `json:"load1"`
	UptimeSec   int64     `json:"uptime_sec"`
	State       string    `json:"state"` // StateUp, StateJoining or StateDown
	Registered  time.Time `json:"registered"`
	LastSeen    time.Time `json:"last_seen"`

	// seen is when the head last heard from the node, on the registry's
	// monotonic clock (Registry.mono). Liveness is judged on it alone:
	// LastSeen is wall time, which steps when node1's clock is set, and
	// loses its monotonic reading in the registry file.
	seen time.Duration
}

// RegisterRequest is what a node tells the head when it joins.
type RegisterRequest struct {
	MAC         string `json:"mac"`
	IP          string `json:"ip"`
	Cores       int    `json:"cores"`
	MemTotalKiB uint64 `json:"mem_total_kib"`
	// SSHHostKey is the node's host public key in authorized_keys format;
	// the API answers with a host certificate for it.
	SSHHostKey string `json:"ssh_host_key,omitempty"`
	// Joining says that the node's sshd does not answer yet: the node is
	// registered as StateJoining, and a later heartbeat without Joining
	// makes it StateUp. False registers it up at once (the head itself,
	// agents without sshd).
	Joining bool `json:"joining,omitempty"`
	// Role is RoleNode when empty. The API always sets it to RoleNode:
	// only the head itself registers as the head, in process.
	Role string `json:"-"`
}

// Stats is what a heartbeat carries. Heartbeat refuses figures no machine
// reports (see Stats.check): they come from a broken or hostile sender.
type Stats struct {
	Load1      float64 `json:"load1"`
	MemUsedKiB uint64  `json:"mem_used_kib"`
	UptimeSec  int64   `json:"uptime_sec"`
	// Joining: the node's sshd does not answer yet (see
	// RegisterRequest.Joining); the node stays StateJoining.
	Joining bool `json:"joining,omitempty"`
}

// Bounds of the figures a heartbeat may carry. They are far beyond any
// machine's (a load of a million, a PiB in use, a century up), so they
// refuse only what no kernel reports, and stay wide enough for hot-added
// memory, which a bound of the registered MemTotalKiB would refuse.
const (
	maxLoad1      = 1e6
	maxMemUsedKiB = 1 << 40
	maxUptimeSec  = 100 * 366 * 24 * 3600
)

// check returns an ErrInvalid error naming the first figure out of bounds.
func (s Stats) check() error {
	switch {
	case math.IsNaN(s.Load1) || s.Load1 < 0 || s.Load1 > maxLoad1:
		return fmt.Errorf("%w: load1 %v is not between 0 and %v", ErrInvalid, s.Load1, float64(maxLoad1))
	case s.MemUsedKiB > maxMemUsedKiB:
		return fmt.Errorf("%w: mem_used_kib %d is more than %d", ErrInvalid, s.MemUsedKiB, uint64(maxMemUsedKiB))
	case s.UptimeSec < 0 || s.UptimeSec > maxUptimeSec:
		return fmt.Errorf("%w: uptime_sec %d is not between 0 and %d", ErrInvalid, s.UptimeSec, maxUptimeSec)
	}
	return nil
}

// fileFormat is the saved registry.
type fileFormat struct {
	Version int    `json:"version"`
	Nodes   []Node `json:"nodes"`
}

// Registry is the set of nodes. It is safe for concurrent use.
type Registry struct {
	path     string
	naming   contract.Naming
	interval time.Duration
	onChange func([]Node)
	gen      uint64 // see Generation

	mu    sync.Mutex
	nodes map[string]*Node     // by MAC
	now   func() time.Time     // wall clock: Registered, LastSeen
	mono  func() time.Duration // monotonic clock: liveness (Node.seen)
	log   *slog.Logger

	// Saving and onChange run in one background goroutine at a time,
	// with the latest state: a burst of changes (a room of machines
	// powered on at once) costs a few writes, not one each, and requests
	// do not wait for the disk or for the hostfiles being rewritten.
	dirty   bool
	saving  bool
	saveErr error
	idle    *sync.Cond // signalled when the saver stops; uses mu

	// keptAs and damage say where Open set a damaged file aside, and why.
	keptAs string
	damage error
}

// Open loads the registry saved at path (none yet is fine) for the cluster
// network that naming describes, for nodes that heartbeat every interval. onChange, if not nil, gets every node after
// changes: in the background, one call at a time, always with the latest
// state, so that changes in quick succession may be reported once. It may
// call the registry. Open itself does not call it: the caller has Nodes().
// Call Flush before exiting, to have the last change saved.
//
// A file that does not parse is renamed to <path>.corrupt-<UTC time> and
// the registry starts empty (Damaged says so): the nodes register again
// when the head answers their next heartbeat with 404. Only a file that
// cannot be read or set aside is an error.
func Open(path string, naming contract.Naming, interval time.Duration, onChange func([]Node)) (*Registry, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("heartbeat interval %v must be positive", interval)
	}
	if err := naming.Check(); err != nil {
		return nil, err
	}
	r := &Registry{path: path, naming: naming, interval: interval, onChange: onChange, nodes: map[string]*Node{}, now: time.Now, log: slog.Default()}
	// time.Since reads the monotonic clock that time.Now carries, so
	// setting node1's clock (NTP, by hand, an RTC in local time) moves no
	// node's liveness.
	start := time.Now()
	r.mono = func() time.Duration { return time.Since(start) }
	// Starting from the clock keeps generations of a restarted head from
	// repeating the ones its nodes saw before.
	r.gen = uint64(time.Now().UnixNano())
	r.idle = sync.NewCond(&r.mu)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return r, nil
	case err != nil:
		return nil, fmt.Errorf("node registry: %w", err)
	}
	var f fileFormat
	if err := json.Unmarshal(data, &f); err != nil {
		kept, serr := atomicfile.SetAside(path, time.Now())
		if serr != nil {
			return nil, fmt.Errorf("node registry %s is damaged (%v), and it cannot be set aside: %w", path, err, serr)
		}
		r.keptAs, r.damage = kept, err
		return r, nil
	}
	for _, n := range f.Nodes {
		mac, err := normalizeMAC(n.MAC)
		if err != nil {
			continue
		}
		ip, err := netip.ParseAddr(n.IP)
		if err != nil || !ip.Is4() {
			continue
		}
		// A record from another cluster network (node1 moved to another
		// LAN) has no name here: the node registers again.
		name, err := naming.Name(ip)
		if err != nil {
			continue
		}
		n.MAC, n.IP, n.Name = mac, ip.String(), name
		// Nodes loaded from the file count as heard from at Open: a
		// restarted head gives them MissedHeartbeats intervals instead of
		// dropping them all at once, whatever LastSeen the file says (a
		// wall time, possibly from a clock set since).
		n.seen = r.mono()
		// A hand-edited file could hold one address twice; the latest
		// registration wins, as it would have live.
		if old := r.byIP(n.IP); old != nil {
			if old.Registered.After(n.Registered) {
				continue
			}
			delete(r.nodes, old.MAC)
		}
		r.nodes[mac] = &n
	}
	return r, nil
}

// Damaged reports whether Open found the file damaged: the path the bad
// file was renamed to, and the parse error; "" and nil if it did not.
func (r *Registry) Damaged() (keptAs string, cause error) {
	return r.keptAs, r.damage
}

// SetClock replaces the registry's clock (time.Now), for tests, with one
// that only goes forward: the monotonic clock is now's distance from its
// first reading. Call it before anything else.
func (r *Registry) SetClock(now func() time.Time) {
	start := now()
	r.SetClocks(now, func() time.Duration { return now().Sub(start) })
}

// SetClocks replaces the registry's wall clock (time.Now, shown and saved
// as Registered and LastSeen) and its monotonic clock (time since Open,
// which alone decides liveness), for tests of clocks that jump. Call it
// before anything else: nodes loaded by Open count as heard from now.
func (r *Registry) SetClocks(wall func() time.Time, mono func() time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now, r.mono = wall, mono
	for _, n := range r.nodes {
		n.seen = mono()
	}
}

// SetLogger sets where failures to save the registry are logged
// (default slog.Default()).
func (r *Registry) SetLogger(l *slog.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = l
}

// Interval is the heartbeat interval nodes are told to keep.
func (r *Registry) Interval() time.Duration { return r.interval }

// Naming is the naming rule the registry names nodes by.
func (r *Registry) Naming() contract.Naming { return r.naming }

// normalizeMAC checks a MAC address and returns it in the cluster's one
// form (contract.NormalizeMAC), so that "AA-BB-..." and "aa:bb:..." are one
// node.
func normalizeMAC(s string) (string, error) {
	m, err := contract.NormalizeMAC(s)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return m, nil
}

// parseIP checks a node address: a host address of the cluster subnet, and
// returns it with the name the naming rule gives it.
func (r *Registry) parseIP(s string) (netip.Addr, string, error) {
	ip, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return ip, "", fmt.Errorf("%w: IP %q is not an IPv4 address", ErrInvalid, s)
	}
	ip = ip.Unmap()
	name, err := r.naming.Name(ip)
	if err != nil {
		return ip, "", fmt.Errorf("%w: IP %v", ErrInvalid, err)
	}
	return ip, name, nil
}

// byIP returns the node holding ip, if any. r.mu must be held.
func (r *Registry) byIP(ip string) *Node {
	for _, n := range r.nodes {
		if n.IP == ip {
			return n
		}
	}
	return nil
}

// Register adds a node or renews its record. A node is its MAC: the same
// MAC registering again (a reboot, a restarted agent, a head that forgot
// its heartbeats) keeps its record and Registered time. A new MAC at an
// address an old record holds replaces that record: the address, and so
// the name, now belongs to the new machine (the old one's network card was
// swapped, or DHCP moved it). Nobody but the head may take the head's
// record.
func (r *Registry) Register(req RegisterRequest) (Node, error) {
	mac, err := normalizeMAC(req.MAC)
	if err != nil {
		return Node{}, err
	}
	ip, name, err := r.parseIP(req.IP)
	if err != nil {
		return Node{}, err
	}
	role := req.Role
	switch role {
	case "":
		role = RoleNode
	case RoleNode, RoleHead:
	default:
		return Node{}, fmt.Errorf("%w: role %q", ErrInvalid, req.Role)
	}
	if req.Cores < 0 || req.Cores > 1<<16 {
		return Node{}, fmt.Errorf("%w: %d cores", ErrInvalid, req.Cores)
	}

	if role != RoleHead && name == contract.HeadName {
		return Node{}, fmt.Errorf("%w: %s is the head's address", ErrConflict, ip)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if other := r.byIP(ip.String()); other != nil && other.MAC != mac {
		if other.Role == RoleHead && role != RoleHead {
			return Node{}, fmt.Errorf("%w: %s is the head's address", ErrConflict, ip)
		}
	}
	if own := r.nodes[mac]; own != nil && own.Role == RoleHead && role != RoleHead {
		return Node{}, fmt.Errorf("%w: %s is the head's MAC", ErrConflict, mac)
	}
	if other := r.byIP(ip.String()); other != nil && other.MAC != mac {
		delete(r.nodes, other.MAC)
	}
	n := r.nodes[mac]
	if n == nil {
		n = &Node{MAC: mac, Registered: now}
		r.nodes[mac] = n
	} else if n.IP != ip.String() {
		// Same machine, new address: a new name, so a new membership.
		n.Registered = now
	}
	n.IP = ip.String()
	n.Name = name
	n.Role = role
	n.Cores = max(req.Cores, 1)
	n.MemTotalKiB = req.MemTotalKiB
	n.State = StateUp
	if req.Joining {
		n.State = StateJoining
	}
	n.LastSeen = now
	n.seen = r.mono()
	r.changed()
	return *n, nil
}

// Heartbeat records that the node with mac is alive, with its load. It
// returns ErrUnknownNode for a MAC that is not registered (it never adds a
// node: a pruned node must register again), and an ErrInvalid error, having
// changed nothing, for a bad MAC or figures out of bounds. A heartbeat only
// updates memory, unless it changes the node's state (a down node back, a
// joining node whose sshd now answers: StateUp, or StateJoining while
// s.Joining): saving 40 times a
// second for 200 nodes, or rewriting the hostfiles, would buy nothing,
// because stats are stale seconds later anyway.
func (r *Registry) Heartbeat(mac string, s Stats) error {
	m, err := normalizeMAC(mac)
	if err != nil {
		return err
	}
	if err := s.check(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nodes[m]
	if n == nil {
		return ErrUnknownNode
	}
	n.Load1, n.MemUsedKiB, n.UptimeSec = s.Load1, s.MemUsedKiB, s.UptimeSec
	n.LastSeen = r.now()
	n.seen = r.mono()
	want := StateUp
	if s.Joining {
		want = StateJoining
	}
	if n.State != want {
		n.State = want
		r.changed()
	}
	return nil
}

// Leave removes the node with mac: it shut down cleanly, so it is not
// "down" (missing) but gone.
func (r *Registry) Leave(mac string) error {
	m, err := normalizeMAC(mac)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nodes[m] == nil {
		return ErrUnknownNode
	}
	delete(r.nodes, m)
	r.changed()
	return nil
}

// Sweep marks down every node last heard from more than MissedHeartbeats
// intervals before now. The head itself is never swept: it is the process
// running this. Nodes loaded from the file get that long after Open, so a
// restarted head does not drop them all at once.
//
// Only the head's monotonic clock counts: now is taken as an offset from
// the registry's own present (now minus its wall clock's reading), which
// for a now from time.Now or a ticker is a monotonic difference too. So a
// step of node1's clock, forward or back, neither drops live nodes nor
// keeps dead ones up, and nothing a node sends (its uptime, its clock)
// enters. The head runs SweepEvery with the ticker's now; tests pass a
// later now to see the nodes as they will be.
func (r *Registry) Sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at := r.mono() + now.Sub(r.now())
	limit := MissedHeartbeats * r.interval
	changed := false
	for _, n := range r.nodes {
		if n.Role != RoleHead && n.State != StateDown && at-n.seen > limit {
			n.State = StateDown
			changed = true
		}
	}
	if changed {
		r.changed()
	}
}

// SweepEvery calls Sweep every interval until ctx is done.
func (r *Registry) SweepEvery(ctx context.Context) {
	// A fifth of an interval: a silent node is marked down at most that long
	// after its three intervals have passed.
	t := time.NewTicker(max(r.interval/5, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.Sweep(now)
		}
	}
}

// Prune removes the nodes that are down and returns them.
func (r *Registry) Prune() []Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	var gone []Node
	for mac, n := range r.nodes {
		if n.State == StateDown {
			gone = append(gone, *n)
			delete(r.nodes, mac)
		}
	}
	if len(gone) > 0 {
		r.changed()
	}
	sortNodes(gone)
	return gone
}

// Lookup returns the node with mac, if the registry has it.
func (r *Registry) Lookup(mac string) (Node, bool) {
	m, err := normalizeMAC(mac)
	if err != nil {
		return Node{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.nodes[m]; n != nil {
		return *n, true
	}
	return Node{}, false
}

// Nodes returns every node, sorted by address.
func (r *Registry) Nodes() []Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.list()
}

// list copies the nodes, sorted. r.mu must be held.
func (r *Registry) list() []Node {
	out := make([]Node, 0, len(r.nodes))
	for _, n := range r.nodes {
		out = append(out, *n)
	}
	sortNodes(out)
	return out
}

func sortNodes(ns []Node) {
	slices.SortFunc(ns, func(a, b Node) int {
		ia, _ := netip.ParseAddr(a.IP)
		ib, _ := netip.ParseAddr(b.IP)
		return ia.Compare(ib)
	})
}

// Generation counts the changes to the node list that the cluster files
// follow (joins, leaves, nodes going up or down, prunes); load figures do
// not count. Nodes that write their own cluster files fetch the list again
// only when it moved.
func (r *Registry) Generation() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

// changed schedules a save and an onChange call. r.mu must be held.
func (r *Registry) changed() {
	r.gen++
	r.dirty = true
	if !r.saving {
		r.saving = true
		go r.saver()
	}
}

// saver saves and reports the latest state until nothing changed meanwhile.
func (r *Registry) saver() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.dirty {
		r.dirty = false
		nodes := r.list()
		r.mu.Unlock()
		err := r.save(nodes)
		if r.onChange != nil {
			r.onChange(nodes)
		}
		r.mu.Lock()
		if err != nil {
			r.saveErr = fmt.Errorf("%w %s: %v", ErrSave, r.path, err)
			r.log.Error("node registry not saved; the next change tries again", "err", err)
		} else {
			r.saveErr = nil
		}
	}
	r.saving = false
	r.idle.Broadcast()
}

// Flush waits until every change so far is saved and reported to
// onChange, and returns the error of the last save, if it failed.
func (r *Registry) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.saving || r.dirty {
		r.idle.Wait()
	}
	return r.saveErr
}

// save writes the registry atomically: a head killed mid-write must find
// the old file or the new one on its next start, not half of one. It does
// not fsync: on a live head the file is in RAM, and against a crash of the
// process the rename is what counts.
func (r *Registry) save(nodes []Node) error {
	data, err := json.MarshalIndent(fileFormat{Version: 1, Nodes: nodes}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(r.path, append(data, '\n'), 0o644)
}
