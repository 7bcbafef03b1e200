package registry

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// clock is a fake clock the tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

// testNaming is the default cluster network: 10.99.0.0/24, node1 at .1.
var testNaming = contract.Naming{Subnet: netip.MustParsePrefix("10.99.0.0/24"), Head: netip.MustParseAddr("10.99.0.1")}

func req(mac, ip string) RegisterRequest {
	return RegisterRequest{MAC: mac, IP: ip, Cores: 4, MemTotalKiB: 8 << 20}
}

// open opens a registry in a temp dir with a fake clock and records every
// onChange.
func open(t *testing.T, path string, c *clock) (*Registry, *[][]Node) {
	t.Helper()
	var changes [][]Node
	r, err := Open(path, testNaming, 5*time.Second, func(n []Node) { changes = append(changes, n) })
	if err != nil {
		t.Fatal(err)
	}
	r.SetClock(c.now)
	r.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	// Let background saves end before the temporary folder goes.
	t.Cleanup(func() { r.Flush() })
	return r, &changes
}

func names(ns []Node) []string {
	var s []string
	for _, n := range ns {
		s = append(s, n.Name+"/"+n.State)
	}
	return s
}

func TestRegisterNamesAndOrder(t *testing.T) {
	c := newClock()
	r, changes := open(t, filepath.Join(t.TempDir(), "nodes.json"), c)
	for _, rq := range []RegisterRequest{req("52:54:00:00:00:0c", "10.99.0.12"), req("52:54:00:00:00:03", "10.99.0.3"), req("52:54:00:00:00:c8", "10.99.0.200")} {
		if _, err := r.Register(rq); err != nil {
			t.Fatal(err)
		}
		r.Flush()
	}
	got := names(r.Nodes())
	if want := []string{"node3/up", "node12/up", "node200/up"}; !slices.Equal(got, want) {
		t.Errorf("Nodes = %v, want %v (sorted by address, not by name)", got, want)
	}
	if len(*changes) != 3 {
		t.Errorf("%d onChange calls, want 3", len(*changes))
	}
	n := r.Nodes()[0]
	if n.Role != RoleNode || n.Cores != 4 || n.MemTotalKiB != 8<<20 || !n.Registered.Equal(c.t) || !n.LastSeen.Equal(c.t) {
		t.Errorf("node3 = %+v", n)
	}
}

func TestRegisterSameMACKeepsRecord(t *testing.T) {
	c := newClock()
	r, _ := open(t, filepath.Join(t.TempDir(), "nodes.json"), c)
	first, _ := r.Register(req("52:54:00:AA:BB:01", "10.99.0.5"))
	c.add(time.Minute)
	again, err := r.Register(RegisterRequest{MAC: "52-54-00-aa-bb-01", IP: "10.99.0.5", Cores: 8})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Nodes()) != 1 || again.Name != "node5" || again.Cores != 8 {
		t.Fatalf("re-registration: %+v, nodes %v", again, names(r.Nodes()))
	}
	if !again.Registered.Equal(first.Registered) || !again.LastSeen.Equal(c.t) {
		t.Errorf("registered %v (want the first, %v), last seen %v", again.Registered, first.Registered, again.LastSeen)
	}
	if again.MAC != "52:54:00:aa:bb:01" {
		t.Errorf("MAC not normalized: %q", again.MAC)
	}
	// The same machine at a new address: renamed, still one record.
	moved, _ := r.Register(req("52:54:00:aa:bb:01", "10.99.0.9"))
	if moved.Name != "node9" || len(r.Nodes()) != 1 {
		t.Errorf("moved node: %+v, nodes %v", moved, names(r.Nodes()))
	}
}

func TestNewMACTakesOverAddress(t *testing.T) {
	c := newClock()
	r, _ := open(t, filepath.Join(t.TempDir(), "nodes.json"), c)
	r.Register(req("52:54:00:00:00:01", "10.99.0.7"))
	r.Register(req("52:54:00:00:00:02", "10.99.0.7"))
	ns := r.Nodes()
	if len(ns) != 1 || ns[0].MAC != "52:54:00:00:00:02" || ns[0].Name != "node7" {
		t.Errorf("nodes = %+v; the new MAC should replace the old record", ns)
	}
}

func TestHeadIsProtected(t *testing.T) {
	c := newClock()
	r, _ := open(t, filepath.Join(t.TempDir(), "nodes.json"), c)
	head := req("52:54:00:00:00:01", "10.99.0.1")
	head.Role = RoleHead
	if n, err := r.Register(head); err != nil || n.Name != "node1" || n.Role != RoleHead {
		t.Fatalf("head registration: %+v %v", n, err)
	}
	if _, err := r.Register(req("52:54:00:00:00:66", "10.99.0.1")); !errors.Is(err, ErrConflict) {
		t.Errorf("a node taking the head's address: err = %v, want ErrConflict", err)
	}
	if _, err := r.Register(req("52:54:00:00:00:01", "10.99.0.66")); !errors.Is(err, ErrConflict) {
		t.Errorf("a node taking the head's MAC: err = %v, want ErrConflict", err)
	}
	// The head is never swept: it is the process keeping the registry.
	c.add(time.Hour)
	r.Sweep(c.t)
	if n := r.Nodes()[0]; n.State != StateUp {
		t.Errorf("head swept down: %+v", n)
	}
}

func TestRegisterValidates(t *testing.T) {
	r, changes := open(t, filepath.Join(t.TempDir(), "nodes.json"), newClock())
	for _, rq := range []RegisterRequest{
		req("nonsense", "10.99.0.5"),
		req("01:00:5e:00:00:01", "10.99.0.5"), // multicast MAC
		req("52:54:00:00:00:01", "10.99.0"),
		req("52:54:00:00:00:01", "fe80::1"),
		req("52:54:00:00:00:01", "0.0.0.0"),
		req("52:54:00:00:00:01", "224.0.0.1"),
		{MAC: "52:54:00:00:00:01", IP: "10.99.0.5", Cores: -1},
		{MAC: "52:54:00:00:00:01", IP: "10.99.0.5", Role: "king"},
	} {
		if _, err := r.Register(rq); !errors.Is(err, ErrInvalid) {
			t.Errorf("Register(%+v): err = %v, want ErrInvalid", rq, err)
		}
	}
	r.Flush()
	if len(r.Nodes()) != 0 || len(*changes) != 0 {
		t.Errorf("invalid requests changed the registry: %v", r.Nodes())
	}
}

func TestHeartbeatSweepLeave(t *testing.T) {
	c := newClock()
	r, changes := open(t, filepath.Join(t.TempDir(), "nodes.json"), c)
	r.Register(req("52:54:00:00:00:02", "10.99.0.2"))
	r.Register(req("52:54:00:00:00:03", "10.99.0.3"))
	r.Flush()
	base := len(*changes)

	if err := r.Heartbeat("52:54:00:00:00:09", Stats{}); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("heartbeat of an unknown node: %v", err)
	}
	// node2 heartbeats, node3 goes silent.
	for range 3 {
		c.add(5 * time.Second)
		if err := r.Heartbeat("52:54:00:00:00:02", Stats{Load1: 1.5, MemUsedKiB: 1024, UptimeSec: 99}); err != nil {
			t.Fatal(err)
		}
	}
	r.Flush()
	if len(*changes) != base {
		t.Errorf("heartbeats called onChange %d times; stats alone are no membership change", len(*changes)-base)
	}
	// 15 s = exactly 3 intervals: not yet down.
	r.Sweep(c.t)
	if got := names(r.Nodes()); !slices.Equal(got, []string{"node2/up", "node3/up"}) {
		t.Fatalf("after 3 intervals: %v", got)
	}
	c.add(time.Second)
	r.Sweep(c.t)
	r.Flush()
	ns := r.Nodes()
	if got := names(ns); !slices.Equal(got, []string{"node2/up", "node3/down"}) {
		t.Fatalf("after 3 missed intervals: %v", got)
	}
	if ns[0].Load1 != 1.5 || ns[0].MemUsedKiB != 1024 || ns[0].UptimeSec != 99 || !ns[0].LastSeen.Equal(c.t.Add(-time.Second)) {
		t.Errorf("node2 stats: %+v", ns[0])
	}
	if len(*changes) != base+1 || names((*changes)[len(*changes)-1])[1] != "node3/down" {
		t.Errorf("sweep did not report node3 down: %d changes", len(*changes)-base)
	}
	// A second sweep changes nothing more.
	r.Sweep(c.t)
	r.Flush()
	if len(*changes) != base+1 {
		t.Errorf("an idle sweep called onChange")
	}
	// node3 comes back with a heartbeat.
	if err := r.Heartbeat("52:54:00:00:00:03", Stats{}); err != nil {
		t.Fatal(err)
	}
	if got := names(r.Nodes()); !slices.Equal(got, []string{"node2/up", "node3/up"}) {
		t.Errorf("after node3's heartbeat: %v", got)
	}
	// Leave removes.
	if err := r.Leave("52:54:00:00:00:03"); err != nil {
		t.Fatal(err)
	}
	if err := r.Leave("52:54:00:00:00:03"); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("second leave: %v", err)
	}
	if got := names(r.Nodes()); !slices.Equal(got, []string{"node2/up"}) {
		t.Errorf("after leave: %v", got)
	}
	if err := r.Heartbeat("52:54:00:00:00:03", Stats{}); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("heartbeat after leave: %v, want ErrUnknownNode (the agent re-registers)", err)
	}
}

func TestPrune(t *testing.T) {
	c := newClock()
	r, _ := open(t, filepath.Join(t.TempDir(), "nodes.json"), c)
	r.Register(req("52:54:00:00:00:02", "10.99.0.2"))
	r.Register(req("52:54:00:00:00:03", "10.99.0.3"))
	c.add(time.Minute)
	r.Heartbeat("52:54:00:00:00:02", Stats{})
	r.Sweep(c.t)
	gone := r.Prune()
	if len(gone) != 1 || gone[0].Name != "node3" {
		t.Errorf("Prune = %v", gone)
	}
	if got := names(r.Nodes()); !slices.Equal(got, []string{"node2/up"}) {
		t.Errorf("after prune: %v", got)
	}
	if gone := r.Prune(); len(gone) != 0 {
		t.Errorf("second Prune = %v", gone)
	}
}

func TestPersistence(t *testing.T) {
	c := newClock()
	path := filepath.Join(t.TempDir(), "state", "nodes.json")
	r, _ := open(t, path, c)
	r.Register(req("52:54:00:00:00:02", "10.99.0.2"))
	r.Register(req("52:54:00:00:00:03", "10.99.0.3"))
	r.Register(req("52:54:00:00:00:04", "10.99.0.4"))
	r.Leave("52:54:00:00:00:04")
	c.add(time.Minute)
	r.Heartbeat("52:54:00:00:00:02", Stats{})
	r.Sweep(c.t)
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	before := r.Nodes()

	// The head restarts.
	r2, _ := open(t, path, c)
	after := r2.Nodes()
	if !slices.Equal(names(before), names(after)) || len(after) != 2 {
		t.Fatalf("after restart: %v, before %v", names(after), names(before))
	}
	// Re-registering after the restart: same name, no duplicate.
	n, err := r2.Register(req("52:54:00:00:00:02", "10.99.0.2"))
	if err != nil || n.Name != "node2" || !n.Registered.Equal(before[0].Registered) {
		t.Errorf("re-registration after restart: %+v %v", n, err)
	}
	r2.Flush()
	if len(r2.Nodes()) != 2 {
		t.Errorf("duplicate after restart: %v", names(r2.Nodes()))
	}
	// Nodes loaded from the file get a grace period after a restart:
	// a head that was down for a while must not drop them all at once.
	c.add(time.Hour)
	r3, _ := open(t, path, c)
	c.add(10 * time.Second)
	r3.Sweep(c.t)
	if got := names(r3.Nodes()); !slices.Equal(got, []string{"node2/up", "node3/down"}) {
		t.Errorf("sweep right after a restart: %v", got)
	}
	c.add(6 * time.Second) // 3 intervals after the restart, and no heartbeat
	r3.Sweep(c.t)
	if got := names(r3.Nodes()); !slices.Equal(got, []string{"node2/down", "node3/down"}) {
		t.Errorf("sweep 3 intervals after a restart: %v", got)
	}
	// No temporary files are left beside the file.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("state folder holds %d files, want only nodes.json", len(entries))
	}
}

func TestDamagedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodes.json")
	os.WriteFile(path, []byte(`{"version":1,"nodes":[{"name":"x","mac":"52:54:00:0`), 0o644)
	r, err := Open(path, testNaming, time.Second, nil)
	if err != nil {
		t.Fatalf("a truncated registry file stops Open: %v", err)
	}
	kept, cause := r.Damaged()
	if kept == "" || cause == nil || len(r.Nodes()) != 0 {
		t.Fatalf("truncated file: Damaged() = %q, %v; nodes %v", kept, cause, r.Nodes())
	}
	if b, err := os.ReadFile(kept); err != nil || !strings.HasPrefix(string(b), `{"version":1,"nodes":[{"name":"x"`) {
		t.Errorf("damaged file kept as %s: %q, %v", kept, b, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("damaged file still at %s: %v", path, err)
	}
	r.Flush()
	// Duplicate addresses in a hand-edited file: the latest registration wins.
	os.WriteFile(path, []byte(`{"version":1,"nodes":[
		{"name":"x","mac":"52:54:00:00:00:01","ip":"10.99.0.5","state":"up","registered":"2026-01-01T00:00:00Z"},
		{"name":"y","mac":"52:54:00:00:00:02","ip":"10.99.0.5","state":"up","registered":"2026-01-02T00:00:00Z"},
		{"name":"z","mac":"bad","ip":"10.99.0.6","state":"up"}]}`), 0o644)
	r, err = Open(path, testNaming, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Flush() })
	if kept, _ := r.Damaged(); kept != "" {
		t.Errorf("a readable file was set aside as %s", kept)
	}
	ns := r.Nodes()
	if len(ns) != 1 || ns[0].MAC != "52:54:00:00:00:02" || ns[0].Name != "node5" {
		t.Errorf("loaded %+v", ns)
	}
}

func TestSaveFailureStillApplies(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "nodes.json")
	r, _ := open(t, path, newClock())
	// Make the folder unusable: a file where the folder should be.
	os.WriteFile(filepath.Join(dir, "sub"), nil, 0o644)
	n, err := r.Register(req("52:54:00:00:00:02", "10.99.0.2"))
	if err != nil || n.Name != "node2" || len(r.Nodes()) != 1 {
		t.Errorf("Register with an unwritable file: %+v, %v", n, err)
	}
	if err := r.Flush(); !errors.Is(err, ErrSave) {
		t.Errorf("Flush = %v, want ErrSave", err)
	}
	// Once the folder is back, the next change saves everything.
	os.Remove(filepath.Join(dir, "sub"))
	r.Register(req("52:54:00:00:00:03", "10.99.0.3"))
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	r2, _ := open(t, path, newClock())
	if len(r2.Nodes()) != 2 {
		t.Errorf("after recovery the file holds %v", names(r2.Nodes()))
	}
}

// TestOnChangeCoalesces: a burst of changes is reported with the final
// state, and onChange may use the registry.
func TestOnChangeCoalesces(t *testing.T) {
	var r *Registry
	var mu sync.Mutex
	var last []Node
	calls := 0
	r, err := Open(filepath.Join(t.TempDir(), "nodes.json"), testNaming, time.Second, func(ns []Node) {
		_ = r.Nodes() // must not deadlock
		mu.Lock()
		defer mu.Unlock()
		last, calls = ns, calls+1
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Flush() })
	for i := range 100 {
		r.Register(req(fmt.Sprintf("52:54:00:00:01:%02x", i), fmt.Sprintf("10.99.0.%d", i+2)))
	}
	r.Flush()
	mu.Lock()
	defer mu.Unlock()
	if len(last) != 100 || calls < 1 || calls > 100 {
		t.Errorf("%d calls, last with %d nodes", calls, len(last))
	}
}

// TestJoining: a node that registers while its sshd does not answer is
// joining until a heartbeat says otherwise; a silent joining node goes
// down like any other, and comes back joining or up as its heartbeat says.
func TestJoining(t *testing.T) {
	c := newClock()
	r, changes := open(t, filepath.Join(t.TempDir(), "nodes.json"), c)
	j := req("52:54:00:00:00:02", "10.99.0.2")
	j.Joining = true
	if n, err := r.Register(j); err != nil || n.State != StateJoining {
		t.Fatalf("Register(joining) = %s, %v", n.State, err)
	}
	r.Register(req("52:54:00:00:00:03", "10.99.0.3"))
	if got := names(r.Nodes()); !slices.Equal(got, []string{"node2/joining", "node3/up"}) {
		t.Fatalf("after registering: %v", got)
	}
	r.Flush()
	base := len(*changes)
	// Still joining: no change to report.
	if err := r.Heartbeat("52:54:00:00:00:02", Stats{Joining: true}); err != nil {
		t.Fatal(err)
	}
	r.Flush()
	if len(*changes) != base || names(r.Nodes())[0] != "node2/joining" {
		t.Fatalf("a joining heartbeat: %v, %d changes", names(r.Nodes()), len(*changes)-base)
	}
	// sshd answers: up, and the hostfiles must be rewritten.
	if err := r.Heartbeat("52:54:00:00:00:02", Stats{}); err != nil {
		t.Fatal(err)
	}
	r.Flush()
	if len(*changes) != base+1 || names((*changes)[len(*changes)-1])[0] != "node2/up" {
		t.Fatalf("sshd answered: %v, %d changes", names(r.Nodes()), len(*changes)-base)
	}
	// A joining node that goes silent is swept down: it is not kept in
	// any state for ever.
	j3 := req("52:54:00:00:00:04", "10.99.0.4")
	j3.Joining = true
	r.Register(j3)
	c.add(MissedHeartbeats*5*time.Second + time.Second)
	r.Sweep(c.t)
	if got := names(r.Nodes()); !slices.Equal(got, []string{"node2/down", "node3/down", "node4/down"}) {
		t.Fatalf("after silence: %v", got)
	}
	if err := r.Heartbeat("52:54:00:00:00:04", Stats{Joining: true}); err != nil {
		t.Fatal(err)
	}
	if got := names(r.Nodes())[2]; got != "node4/joining" {
		t.Errorf("a down node's joining heartbeat: %s, want node4/joining", got)
	}
}
