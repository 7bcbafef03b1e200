package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

func testNodes() []registry.Node {
	return []registry.Node{
		{Name: "node1", IP: "10.99.0.1", Role: registry.RoleHead, State: registry.StateUp},
		{Name: "node2", IP: "10.99.0.2", State: registry.StateUp},
		{Name: "node3", IP: "10.99.0.3", State: registry.StateDown},
		{Name: "node4", IP: "10.99.0.4", State: registry.StateUp},
	}
}

func targetString(ts []pexec.Target) string {
	var parts []string
	for _, t := range ts {
		s := t.Name
		if t.Skip != pexec.OK {
			s += "(" + t.Skip.String() + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func TestSelectTargets(t *testing.T) {
	tests := []struct {
		w, x, want, note string
	}{
		{"all", "", "node1 node2 node4", "node3 down"},
		{"all", "node1", "node2 node4", "node3 down"},
		{"all", "node[1,3]", "node2 node4", ""},
		{"node[2-3]", "", "node2 node3(down)", ""},
		{"node[2-3],node9", "", "node2 node3(down) node9(unknown)", ""},
		{"all,node3", "", "node1 node2 node4 node3(down)", ""},
	}
	for _, tt := range tests {
		ts, notes, err := selectTargets(testNodes(), tt.w, tt.x)
		if err != nil {
			t.Errorf("-w %q -x %q: %v", tt.w, tt.x, err)
			continue
		}
		if got := targetString(ts); got != tt.want {
			t.Errorf("-w %q -x %q: %s, want %s", tt.w, tt.x, got, tt.want)
		}
		note := strings.Join(notes, "; ")
		if (tt.note == "") != (note == "") || !strings.Contains(note, tt.note) {
			t.Errorf("-w %q -x %q: notes %q, want %q", tt.w, tt.x, note, tt.note)
		}
	}
	for _, bad := range [][2]string{{"node[5-2]", ""}, {"all", "node["}} {
		if _, _, err := selectTargets(testNodes(), bad[0], bad[1]); err == nil {
			t.Errorf("-w %q -x %q: no error", bad[0], bad[1])
		}
	}
}

func TestExecVerdict(t *testing.T) {
	ok := []pexec.Result{{Node: "node1", Status: pexec.OK}}
	if err := execVerdict(ok); err != nil {
		t.Errorf("all OK: %v", err)
	}
	bad := append(ok, pexec.Result{Node: "node3", Status: pexec.Down, Detail: "down (not heartbeating), not contacted"})
	err := execVerdict(bad)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(ee.msg, "node3: down") {
		t.Errorf("with a down node: %v", err)
	}
}

// fakeSSH writes a stand-in for ssh that prints "hi" and its destination,
// and fails on node3: enough to check how exec prints, without sshd (the
// real ssh runs are in internal/pexec's tests).
func fakeSSH(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ssh")
	script := `#!/bin/sh
while [ "$1" != "--" ]; do dest=$1; shift; done
case $dest in node3) echo "no such file" >&2; exit 2;; esac
echo hi
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunExecOutput(t *testing.T) {
	ssh := fakeSSH(t)
	targets := []pexec.Target{{Name: "node1"}, {Name: "node2"}, {Name: "node3"}, {Name: "node4", Skip: pexec.Down}}
	for _, group := range []bool{false, true} {
		cmd := &cobra.Command{}
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetContext(context.Background())
		err := runExec(cmd, targets, []string{"true"}, pexec.Options{SSH: ssh}, group)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 1 {
			t.Fatalf("group %v: %v, want exit 1", group, err)
		}
		for _, w := range []string{"2 of 4 nodes failed", "node3: failed: exit 2", "node4: down"} {
			if !strings.Contains(ee.msg, w) {
				t.Errorf("group %v: message lacks %q:\n%s", group, w, ee.msg)
			}
		}
		got := out.String()
		if !group {
			lines := strings.Split(strings.TrimSpace(got), "\n")
			slices.Sort(lines)
			want := []string{"node1: hi", "node2: hi", "node3: no such file"}
			if !slices.Equal(lines, want) {
				t.Errorf("output %q, want %q", lines, want)
			}
			continue
		}
		want := "----------------\nnode[1-2]\n----------------\nhi\n----------------\nnode3\n----------------\nno such file\n"
		if got != want {
			t.Errorf("grouped output:\n%s\nwant:\n%s", got, want)
		}
	}
}
