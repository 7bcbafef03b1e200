package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// statusJSON is what `clusterdebian status --json` prints for nodes.
func statusJSON(t *testing.T, nodes ...registry.Node) string {
	data, err := json.MarshalIndent(nodes, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(data) + "\n"
}

// statusWatch against a fake node1 agent: the real status, an old binary
// without it, no agent at all, a node that never shows up or shows up
// down, and answers that are not a node list.
func TestStatusWatch(t *testing.T) {
	oldWait, oldPoll, oldJoin, oldSync := agentWait, statusPoll, joinTimeout, QGASyncTimeout
	agentWait, statusPoll, joinTimeout, QGASyncTimeout = time.Second, 50*time.Millisecond, 2*time.Second, 200*time.Millisecond
	t.Cleanup(func() { agentWait, statusPoll, joinTimeout, QGASyncTimeout = oldWait, oldPoll, oldJoin, oldSync })

	const mac = "52:54:00:cd:01:02"
	head := registry.Node{Name: "node1", MAC: "52:54:00:cd:01:01", IP: "10.99.0.1", Role: registry.RoleHead, State: registry.StateUp}
	node := registry.Node{Name: "node12", MAC: "52:54:00:CD:01:02", IP: "10.99.0.12", Role: registry.RoleNode, State: registry.StateDown}
	answer := func(out string) func(string, []string) (string, string, int, string) {
		return func(path string, args []string) (string, string, int, string) {
			if path != "clusterdebian" || strings.Join(args, " ") != "status --json" {
				return "", "", 0, "unexpected command " + path
			}
			return out, "", 0, ""
		}
	}
	// The head's registry: node12 is missing at first, then listed down
	// (its agent stopped heartbeating), then up. ("listed down" shows that
	// a node listed down has not joined.)
	var calls atomic.Int32
	registryAnswers := func(path string, args []string) (string, string, int, string) {
		switch calls.Add(1) {
		case 1:
			return answer(statusJSON(t, head))(path, args)
		case 2, 3:
			return answer(statusJSON(t, head, node))(path, args)
		}
		up := node
		up.State = registry.StateUp
		return answer(statusJSON(t, head, up))(path, args)
	}
	notReady := func(string, []string) (string, string, int, string) {
		if calls.Add(1) < 3 {
			return "", "clusterdebian: asking the head: connection refused\n", 1, ""
		}
		up := node
		up.State = registry.StateUp
		return statusJSON(t, head, up), "", 0, ""
	}
	oldBinary := func(string, []string) (string, string, int, string) {
		return "", `clusterdebian: unknown command "status" for "clusterdebian"` + "\n", 1, ""
	}
	tests := []struct {
		name  string
		agent *fakeAgent
		want  string // node name, or an error text
		said  string
	}{
		{"registry", &fakeAgent{exec: registryAnswers}, "node12", ""},
		{"head not ready yet", &fakeAgent{exec: notReady}, "node12", ""},
		{"no status command", &fakeAgent{exec: oldBinary}, "node7", "no status command"},
		{"no agent", &fakeAgent{mute: true}, "node7", "no guest agent answers"},
		{"never joins", &fakeAgent{exec: answer(statusJSON(t, head))}, "not up in node1's clusterdebian status --json, which says: [", ""},
		{"listed down", &fakeAgent{exec: answer(statusJSON(t, head, node))}, "not up in node1's clusterdebian status --json", ""},
		{"null", &fakeAgent{exec: answer("null\n")}, "node1's clusterdebian status --json: not a node list: null; it printed: null", ""},
		{"not JSON", &fakeAgent{exec: answer("node12 up\n")}, "node1's clusterdebian status --json: not a node list: invalid character", ""},
		{"another layout", &fakeAgent{exec: answer(`{"nodes": [{"name": "node12", "mac": "52:54:00:cd:01:02", "state": "up"}]}`)}, "not a node list", ""},
		{"bad MAC", &fakeAgent{exec: answer(`[{"name": "node12", "mac": "52:54", "state": "up"}]`)}, `not a node list: node "node12": MAC "52:54"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls.Store(0)
			a := startFakeAgent(t, tt.agent)
			head := &VMState{Name: HeadVM, Dir: filepath.Dir(a.sock)}
			var mu sync.Mutex
			var said []string
			say := func(format string, args ...any) {
				mu.Lock()
				defer mu.Unlock()
				said = append(said, fmt.Sprintf(format, args...))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s := newStatusWatch(&Cluster{}, head, say)
			go s.run(ctx)
			name, err := s.waitJoined(ctx, mac, "node7")
			got := name
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("waitJoined = %q, %v; want %q", name, err, tt.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if tt.said != "" && !strings.Contains(strings.Join(said, "\n"), tt.said) {
				t.Errorf("progress %q lacks %q", said, tt.said)
			}
		})
	}
}

func TestVMStateSerial(t *testing.T) {
	c := testCluster(t, nil)
	if c.Machines()[1].Serial() != "" {
		t.Error("serial of a VM that never ran")
	}
	writeFile(t, filepath.Join(c.VMs[1].Dir, SerialLogFile), "node12 login: ")
	if m := c.Machines(); m[1].Name != "vm2" || m[1].Serial() != "node12 login: " {
		t.Errorf("Machines()[1] = %+v, serial %q", m[1], m[1].Serial())
	}
}
