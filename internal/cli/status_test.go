package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/role"
)

func TestSummaryLine(t *testing.T) {
	nodes := []registry.Node{
		{Name: "node1", State: registry.StateUp, Cores: 4, Load1: 0.7},
		{Name: "node2", State: registry.StateUp, Cores: 2, Load1: 0.5},
		{Name: "node3", State: registry.StateDown, Cores: 8, Load1: 9},
	}
	if got, want := summaryLine(nodes), "3 nodes: 2 up, 1 down; 6 cores; load 1.2"; got != want {
		t.Errorf("summaryLine = %q, want %q", got, want)
	}
	if got, want := summaryLine(nodes[:1]), "1 node: 1 up, 0 down; 4 cores; load 0.7"; got != want {
		t.Errorf("summaryLine = %q, want %q", got, want)
	}
	joining := append(slices.Clone(nodes), registry.Node{Name: "node4", State: registry.StateJoining, Cores: 16})
	if got, want := summaryLine(joining), "4 nodes: 2 up, 1 joining, 1 down; 6 cores; load 1.2"; got != want {
		t.Errorf("summaryLine = %q, want %q", got, want)
	}
	if got, want := summaryLine(nil), "0 nodes: 0 up, 0 down; 0 cores; load 0.0"; got != want {
		t.Errorf("summaryLine = %q, want %q", got, want)
	}
}

func TestWatchLoop(t *testing.T) {
	now := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	nodes := []registry.Node{{Name: "node1", IP: "10.99.0.1", Role: registry.RoleHead, State: registry.StateUp, Cores: 2, Load1: 0.25, LastSeen: now}}
	for _, tty := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		fetch := func() ([]registry.Node, error) {
			calls++
			switch calls {
			case 2:
				return nil, errors.New("head restarting")
			case 3:
				cancel() // the third table is the last
			}
			return nodes, nil
		}
		var out bytes.Buffer
		if err := watchLoop(ctx, &out, time.Millisecond, tty, fetch, func() time.Time { return now }); err != nil {
			t.Fatal(err)
		}
		cancel()
		s := out.String()
		if calls != 3 {
			t.Errorf("tty %v: %d fetches, want 3", tty, calls)
		}
		if n := strings.Count(s, "1 node: 1 up, 0 down; 2 cores; load 0.2"); n != 2 {
			t.Errorf("tty %v: %d summary lines, want 2:\n%s", tty, n, s)
		}
		if !strings.Contains(s, "clusterdebian status: head restarting") {
			t.Errorf("tty %v: the failed fetch is not shown:\n%s", tty, s)
		}
		if n := strings.Count(s, clearScreen); (tty && n != 3) || (!tty && n != 0) {
			t.Errorf("tty %v: %d screen clears", tty, n)
		}
		if !tty && !strings.HasPrefix(s, "NAME") {
			t.Errorf("plain output does not start with the table:\n%q", s)
		}
	}
}

// status and status --json against a real API, and against a head whose
// answer is not a node list.
func TestStatusCommand(t *testing.T) {
	reg, err := registry.Open(filepath.Join(t.TempDir(), "nodes.json"), contract.Naming{Subnet: netip.MustParsePrefix("10.99.0.0/24"), Head: netip.MustParseAddr("10.99.0.1")}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Flush() })
	if _, err := reg.Register(registry.RegisterRequest{MAC: "52:54:00:00:00:05", IP: "10.99.0.5", Cores: 2}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.NewAPI(reg, "", nil, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	run := func(args ...string) (string, error) {
		cmd := newStatusCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SilenceUsage = true // as the root command has it
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}

	out, err := run("--head", srv.URL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := registry.DecodeNodes([]byte(out))
	if err != nil || len(nodes) != 1 || nodes[0].Name != "node5" || nodes[0].MAC != "52:54:00:00:00:05" || nodes[0].State != registry.StateUp ||
		!nodes[0].Registered.Equal(reg.Nodes()[0].Registered) || !strings.HasSuffix(out, "]\n") {
		t.Errorf("status --json printed %q: %+v, %v", out, nodes, err)
	}
	out, err = run("--head", srv.URL)
	if err != nil || !strings.Contains(out, "node5") || !strings.Contains(out, "1 node: 1 up, 0 down; 2 cores") {
		t.Errorf("status: %v\n%s", err, out)
	}

	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("null")) }))
	defer bad.Close()
	if out, err := run("--head", bad.URL, "--json"); err == nil || out != "" || !strings.Contains(err.Error(), "not a node list") {
		t.Errorf("status --json of a null answer: printed %q, %v", out, err)
	}
	bad.Close()
	if _, err := run("--head", bad.URL); err == nil || !strings.Contains(err.Error(), "is clusterdebian-head running?") {
		t.Errorf("status without a head: %v", err)
	}
}

func TestNetworkLines(t *testing.T) {
	n := registry.Network{Summary: "proxyDHCP on 192.168.50.0/23 beside the DHCP server 192.168.50.1 (it answered node1 and leased it 192.168.50.37)",
		Interface: "eth0", Address: "192.168.50.37", AddressSource: "lease"}
	want := []string{"Network: " + n.Summary, "         node1 is 192.168.50.37 on eth0, leased from the LAN's DHCP server"}
	if got := networkLines(n); !slices.Equal(got, want) {
		t.Errorf("networkLines = %q, want %q", got, want)
	}
	n.AddressSource, n.Warning = "default", "another DHCP server hands out addresses here"
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	n.OtherServers = []registry.OtherDHCPServer{{Server: "10.55.0.1", Description: "seen offering 10.55.0.120 to 52:54:00:ee:00:01", Time: at}}
	got := networkLines(n)
	if len(got) != 4 || got[1] != "         node1 is 192.168.50.37 on eth0" ||
		got[2] != "         another DHCP server: 10.55.0.1 (seen offering 10.55.0.120 to 52:54:00:ee:00:01, 03:04:05)" || got[3] != "Warning: "+n.Warning {
		t.Errorf("networkLines with a warning = %q", got)
	}
}

// TestRenderIssue: node1's banner says which network it serves once the
// head decided, and its address; before that, and on nodes, agetty's \4.
func TestRenderIssue(t *testing.T) {
	plain, err := renderIssue(role.Head, nil)
	if err != nil || !strings.Contains(plain, `Address: \4    Role: head (node1)`) || strings.Contains(plain, "Network:") {
		t.Errorf("banner before the head decided:\n%s (%v)", plain, err)
	}
	n := &registry.Network{Summary: `proxyDHCP on 192.168.50.0/23 beside the DHCP server 192.168.50.1`, Address: "192.168.50.37", Warning: `odd \ text`}
	text, err := renderIssue(role.Head, n)
	if err != nil || !strings.Contains(text, "Address: 192.168.50.37    Role: head (node1)\n Network: "+n.Summary+"\n Warning: odd \\\\ text\n") {
		t.Errorf("node1's banner:\n%s (%v)", text, err)
	}
	node, _ := renderIssue(role.Node, n)
	if strings.Contains(node, "Network:") || !strings.Contains(node, `Address: \4`) {
		t.Errorf("a node's banner:\n%s", node)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "network.json")
	if readNetwork(path) != nil {
		t.Error("readNetwork of a missing file")
	}
	data, _ := json.Marshal(n)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readNetwork(path); got == nil || got.Summary != n.Summary {
		t.Errorf("readNetwork = %+v", got)
	}
}
