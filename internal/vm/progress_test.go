package vm

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// statusWatch against a fake node1 agent: the real status, an old binary
// without it, no agent at all, and a node that never shows up.
func TestStatusWatch(t *testing.T) {
	oldWait, oldPoll, oldJoin, oldSync := agentWait, statusPoll, joinTimeout, QGASyncTimeout
	agentWait, statusPoll, joinTimeout, QGASyncTimeout = time.Second, 50*time.Millisecond, 2*time.Second, 200*time.Millisecond
	t.Cleanup(func() { agentWait, statusPoll, joinTimeout, QGASyncTimeout = oldWait, oldPoll, oldJoin, oldSync })

	const mac = "52:54:00:cd:01:02"
	// The head's registry, as `clusterdebian status --json` prints it; the
	// node appears on the third call.
	var calls atomic.Int32
	registry := func(path string, args []string) (string, string, int, string) {
		if path != "clusterdebian" || strings.Join(args, " ") != "status --json" {
			return "", "", 0, "unexpected command " + path
		}
		nodes := `{"name": "node1", "mac": "52:54:00:cd:01:01", "ip": "10.99.0.1", "role": "head", "state": "up"}`
		if calls.Add(1) >= 3 {
			nodes += `, {"name": "node12", "mac": "52:54:00:CD:01:02", "ip": "10.99.0.12", "role": "node", "state": "up"}`
		}
		return "[" + nodes + "]\n", "", 0, ""
	}
	oldBinary := func(string, []string) (string, string, int, string) {
		return "", `clusterdebian: unknown command "status" for "clusterdebian"` + "\n", 1, ""
	}
	never := func(string, []string) (string, string, int, string) {
		return `[{"name": "node1", "mac": "52:54:00:cd:01:01", "state": "up"}]`, "", 0, ""
	}
	tests := []struct {
		name  string
		agent *fakeAgent
		want  string // node name, or an error text
		said  string
	}{
		{"registry", &fakeAgent{exec: registry}, "node12", ""},
		{"no status command", &fakeAgent{exec: oldBinary}, "node7", "no status command"},
		{"no agent", &fakeAgent{mute: true}, "node7", "no guest agent answers"},
		{"never joins", &fakeAgent{exec: never}, "not up in node1's clusterdebian status --json, which says: [{", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
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
