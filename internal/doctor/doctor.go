// Package doctor checks a running cluster from node1: the head's sockets
// and NFS exports, the room left for node1's RAM-held state, the SSH
// certificates' expiry, and the nodes the head has marked down for missed
// heartbeats. Each check gives one Result (OK, WARN or FAIL with its cause);
// what it reads of the machine comes through Host, so that tests give fakes.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// Status is a check's verdict.
type Status string

// Verdicts: OK, WARN (works, but needs a look soon), FAIL (broken now:
// doctor exits non-zero).
const (
	OK   Status = "OK"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Result is one check's verdict and its cause in words.
type Result struct {
	Check  string // "ports", "exports", "state", "memory", "certs", "heartbeats"
	Status Status
	Detail string
}

func (r Result) String() string { return fmt.Sprintf("%-4s  %-10s  %s", r.Status, r.Check, r.Detail) }

// Failed reports whether any result is a FAIL.
func Failed(rs []Result) bool {
	return slices.ContainsFunc(rs, func(r Result) bool { return r.Status == Fail })
}

// Export is one line of `exportfs -s`: a path and one client.
type Export struct {
	Path   string
	Client string // an address, as the head exports to each node's own
}

// FS is a file system's room, in bytes, as statfs(2) gives it.
type FS struct {
	Size, Free uint64
	Type       string // "tmpfs", "ext4", ... ("" if unknown)
}

// Host is what doctor reads of node1. HostSystem is the real one.
type Host interface {
	// Network is the head's account of its network (contract.RunDir/
	// contract.NetworkFile); fs.ErrNotExist when no head ran this boot.
	Network() (registry.Network, error)
	// Listening lists the machine's listening TCP and bound UDP sockets.
	Listening() ([]head.Listener, error)
	// Exports is what the NFS server exports now (exportfs -s).
	Exports(ctx context.Context) ([]Export, error)
	// StatFS gives the room of the file system holding path.
	StatFS(path string) (FS, error)
	// MemInfo gives MemAvailable and MemTotal, in bytes.
	MemInfo() (avail, total uint64, err error)
	// Nodes asks the running head for its registry.
	Nodes(ctx context.Context) ([]registry.Node, error)
	// ReadFile reads a file (certificates, the CA's public key).
	ReadFile(path string) ([]byte, error)
	Now() time.Time
}

// Options says what the cluster should look like.
type Options struct {
	// Root is the nodes' root mode (cluster.toml nodes.root): it decides
	// what node1 exports (head.ExportPath).
	Root contract.RootMode
	// StateDir is the head's state folder (head.state_dir).
	StateDir string
	// HTTPPort is the head's HTTP port; 0 means 80.
	HTTPPort int
	// Certs are node1's SSH host certificate files that may exist (the
	// live system's and an installed node1's); missing ones are skipped.
	Certs []string
	// CAPub is the cluster CA's public key file, which signs them.
	CAPub string
	// Exports says whether the head exports to the nodes (it keeps
	// node1's root: head.Options.ClusterRoot "/").
	Exports bool
}

// Thresholds. The state folder is a tmpfs in RAM on a live node1: a full
// one stops the head from saving leases (it then refuses new clients), and
// every byte in it is RAM the nodes' jobs cannot have.
const (
	// StateFailFree and StateWarnFree are the state folder's free bytes
	// below which doctor fails or warns (leases and registry take a few
	// hundred bytes per node).
	StateFailFree = 1 << 20
	StateWarnFree = 8 << 20
	// MemFailAvail and MemWarnFraction: node1's MemAvailable below 64 MiB
	// fails, below a tenth of MemTotal warns.
	MemFailAvail    = 64 << 20
	MemWarnFraction = 10
	// CertWarn: a certificate that expires within a week warns.
	CertWarn = 7 * 24 * time.Hour
)

// Run runs every check, in a fixed order, and returns their results.
func Run(ctx context.Context, h Host, o Options) []Result {
	nodes, nodesErr := h.Nodes(ctx)
	return []Result{
		checkPorts(h, o),
		checkExports(ctx, h, o, nodes, nodesErr),
		checkState(h, o),
		checkMemory(h),
		checkCerts(h, o),
		checkHeartbeats(nodes, nodesErr, h.Now()),
	}
}

func checkPorts(h Host, o Options) Result {
	r := Result{Check: "ports"}
	net, err := h.Network()
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("no account of the head's network (%v): is clusterdebian-head running?", err)
		return r
	}
	addr, err := netip.ParseAddr(net.Address)
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("the head's network file names no address (%q)", net.Address)
		return r
	}
	open, err := h.Listening()
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("listing sockets: %v", err)
		return r
	}
	have := map[string]bool{}
	for _, l := range open {
		have[l.String()] = true
	}
	var missing, optional, ok []string
	for _, l := range head.Listeners(dhcp.Mode(net.Mode), addr, o.HTTPPort) {
		switch {
		case have[l.String()]:
			ok = append(ok, fmt.Sprintf("%s %s", l.What, l))
		case l.Optional:
			optional = append(optional, fmt.Sprintf("%s (%s)", l.What, l))
		default:
			missing = append(missing, fmt.Sprintf("%s (%s)", l.What, l))
		}
	}
	switch {
	case len(missing) > 0:
		r.Status, r.Detail = Fail, "not listening: "+strings.Join(missing, ", ")+"; see journalctl -u clusterdebian-head"
	case len(optional) > 0:
		r.Status, r.Detail = Warn, "not listening: "+strings.Join(optional, ", ")+" (something else may hold the port)"
	default:
		r.Status, r.Detail = OK, fmt.Sprintf("DHCP mode %s; listening: %s", net.Mode, strings.Join(ok, ", "))
	}
	return r
}

func checkExports(ctx context.Context, h Host, o Options, nodes []registry.Node, nodesErr error) Result {
	r := Result{Check: "exports"}
	if !o.Exports {
		r.Status, r.Detail = OK, "the head keeps no root here: nothing to export"
		return r
	}
	if nodesErr != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("cannot ask the head which nodes it serves: %v", nodesErr)
		return r
	}
	ex, err := h.Exports(ctx)
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("exportfs -s: %v", err)
		return r
	}
	path := head.ExportPath(o.Root)
	exported := map[string]bool{}
	for _, e := range ex {
		if e.Path == path {
			exported[e.Client] = true
		}
	}
	var missing []string
	n := 0
	for _, nd := range nodes {
		if nd.Role != registry.RoleNode {
			continue
		}
		n++
		if !exported[nd.IP] {
			missing = append(missing, fmt.Sprintf("%s (%s)", nd.Name, nd.IP))
		}
	}
	if len(missing) > 0 {
		r.Status, r.Detail = Fail, fmt.Sprintf("%s is not exported to %s, registered nodes (exportfs -s); restart clusterdebian-head to rewrite the exports", path, strings.Join(missing, ", "))
		return r
	}
	r.Status, r.Detail = OK, fmt.Sprintf("%s exported to all %d registered nodes (%d exports)", path, n, len(exported))
	return r
}

func checkState(h Host, o Options) Result {
	r := Result{Check: "state"}
	st, err := h.StatFS(o.StateDir)
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("state folder %s: %v", o.StateDir, err)
		return r
	}
	what := fmt.Sprintf("state folder %s (%s): %s free of %s", o.StateDir, orUnknown(st.Type), mib(st.Free), mib(st.Size))
	switch {
	case st.Free < StateFailFree:
		r.Status, r.Detail = Fail, what+": full, the head cannot save new leases and refuses new clients; free space or grow the tmpfs"
	case st.Free < StateWarnFree:
		r.Status, r.Detail = Warn, what+": nearly full"
	default:
		r.Status, r.Detail = OK, what
	}
	return r
}

func checkMemory(h Host) Result {
	r := Result{Check: "memory"}
	avail, total, err := h.MemInfo()
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("/proc/meminfo: %v", err)
		return r
	}
	what := fmt.Sprintf("MemAvailable %s of %s (node1's root and state are in RAM)", mib(avail), mib(total))
	switch {
	case avail < MemFailAvail:
		r.Status, r.Detail = Fail, what+": below "+mib(MemFailAvail)
	case avail < total/MemWarnFraction:
		r.Status, r.Detail = Warn, what+fmt.Sprintf(": below a %dth of it", MemWarnFraction)
	default:
		r.Status, r.Detail = OK, what
	}
	return r
}

func checkCerts(h Host, o Options) Result {
	r := Result{Check: "certs"}
	caData, err := h.ReadFile(o.CAPub)
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("cluster CA %s: %v", o.CAPub, err)
		return r
	}
	ca, _, _, _, err := ssh.ParseAuthorizedKey(caData)
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("cluster CA %s: %v", o.CAPub, err)
		return r
	}
	now := h.Now()
	var fails, warns, oks []string
	for _, path := range o.Certs {
		data, err := h.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			fails = append(fails, fmt.Sprintf("%s: %v", path, err))
			continue
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
		cert, isCert := pub.(*ssh.Certificate)
		if err != nil || !isCert {
			fails = append(fails, fmt.Sprintf("%s: not an SSH certificate", path))
			continue
		}
		if !slices.Equal(cert.SignatureKey.Marshal(), ca.Marshal()) {
			fails = append(fails, fmt.Sprintf("%s: not signed by the cluster CA %s (nodes will not trust node1)", path, o.CAPub))
			continue
		}
		if cert.ValidBefore == ssh.CertTimeInfinity {
			oks = append(oks, path+": never expires")
			continue
		}
		until := time.Unix(int64(cert.ValidBefore), 0).UTC()
		switch left := until.Sub(now); {
		case left <= 0:
			fails = append(fails, fmt.Sprintf("%s: expired %s", path, until.Format(time.RFC3339)))
		case left < CertWarn:
			warns = append(warns, fmt.Sprintf("%s: expires %s, in %s", path, until.Format(time.RFC3339), left.Round(time.Minute)))
		default:
			oks = append(oks, fmt.Sprintf("%s: valid until %s", path, until.Format(time.RFC3339)))
		}
	}
	switch {
	case len(fails) > 0:
		r.Status, r.Detail = Fail, strings.Join(append(fails, warns...), "; ")
	case len(warns) > 0:
		r.Status, r.Detail = Warn, strings.Join(warns, "; ")
	case len(oks) == 0:
		r.Status, r.Detail = Fail, "node1 has no SSH host certificate (none of "+strings.Join(o.Certs, ", ")+"): nodes cannot verify it"
	default:
		r.Status, r.Detail = OK, strings.Join(oks, "; ")
	}
	return r
}

// checkHeartbeats reports the nodes the head marked down: the head's
// registry owns the liveness rule (registry.MissedHeartbeats intervals
// without a heartbeat, on its monotonic clock), doctor only reads the
// verdict. A node down is a WARN, not a FAIL: the cluster runs on without
// it (it left the hostfiles), and a powered-off node is no fault of node1.
// So is a node still joining (its sshd does not answer) JoiningSlow after
// it registered, as of now: it heartbeats, but stays out of the hostfiles.
func checkHeartbeats(nodes []registry.Node, nodesErr error, now time.Time) Result {
	r := Result{Check: "heartbeats"}
	if nodesErr != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("cannot ask the head for its nodes: %v", nodesErr)
		return r
	}
	var down, stuck []string
	up := 0
	for _, n := range nodes {
		if n.Role != registry.RoleNode {
			continue
		}
		switch {
		case n.State == registry.StateDown:
			down = append(down, fmt.Sprintf("%s (%s, last seen %s)", n.Name, n.IP, n.LastSeen.UTC().Format(time.RFC3339)))
		case n.State == registry.StateJoining && now.Sub(n.Registered) > JoiningSlow:
			stuck = append(stuck, fmt.Sprintf("%s (%s, registered %s)", n.Name, n.IP, n.Registered.UTC().Format(time.RFC3339)))
		default:
			up++
		}
	}
	sort.Strings(down)
	sort.Strings(stuck)
	var warns []string
	if len(down) > 0 {
		warns = append(warns, fmt.Sprintf("%d of %d nodes missed %d heartbeats and are down: %s (clusterdebian prune forgets them)",
			len(down), len(down)+len(stuck)+up, registry.MissedHeartbeats, strings.Join(down, ", ")))
	}
	if len(stuck) > 0 {
		warns = append(warns, fmt.Sprintf("%d nodes joined more than %v ago and their sshd does not answer yet, so they are not in the hostfiles: %s (see journalctl -u ssh on them)",
			len(stuck), JoiningSlow, strings.Join(stuck, ", ")))
	}
	if len(warns) > 0 {
		r.Status, r.Detail = Warn, strings.Join(warns, "; ")
		return r
	}
	r.Status, r.Detail = OK, fmt.Sprintf("all %d nodes sending heartbeats", up)
	return r
}

// JoiningSlow is how long a node may stay joining (registered, its sshd
// not answering yet) before doctor warns: seconds are normal.
const JoiningSlow = 2 * time.Minute

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func orUnknown(s string) string {
	if s == "" {
		return "unknown type"
	}
	return s
}
