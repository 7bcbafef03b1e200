package pexec

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// script is the command every test node runs: node3 fails with exit 3,
// node6 waits for input that never comes (the test's stdin pipe stays
// open), the others greet.
const script = `case $NODE in node3) echo broken >&2; exit 3;; node6) read x;; esac; echo hello; echo from $NODE`

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	return port
}

func TestRunReportsEachNode(t *testing.T) {
	s := newTestSSH(t)
	dead := closedPort(t)
	var mu sync.Mutex
	var lines []string
	contacted := map[string]bool{}
	o := Options{
		SSHArgs: s.args,
		Destination: func(node string) (string, []string) {
			mu.Lock()
			contacted[node] = true
			mu.Unlock()
			if node == "node5" {
				return "root@127.0.0.1", []string{"-p", dead}
			}
			return s.dest(node)
		},
		OnLine: func(node, line string) {
			mu.Lock()
			defer mu.Unlock()
			lines = append(lines, node+": "+line)
		},
		Fanout: 2,
	}
	targets := []Target{{Name: "node1"}, {Name: "node2"}, {Name: "node3"}, {Name: "node4", Skip: Down}, {Name: "node5"}, {Name: "node9", Skip: Unknown}}
	res := Run(context.Background(), targets, []string{script}, o)

	if len(res) != len(targets) {
		t.Fatalf("%d results for %d targets", len(res), len(targets))
	}
	want := map[string]Status{"node1": OK, "node2": OK, "node3": Failed, "node4": Down, "node5": Unreachable, "node9": Unknown}
	for i, r := range res {
		if r.Node != targets[i].Name {
			t.Errorf("result %d is %s, want %s (target order)", i, r.Node, targets[i].Name)
		}
		if r.Status != want[r.Node] {
			t.Errorf("%s: %s (%s), want %s; output:\n%s", r.Node, r.Status, r.Detail, want[r.Node], r.Output)
		}
	}
	if contacted["node4"] || contacted["node9"] {
		t.Errorf("a node that is down or unknown was contacted: %v", contacted)
	}
	if got := string(res[0].Output); got != "hello\nfrom node1\n" {
		t.Errorf("node1 output %q", got)
	}
	if res[2].ExitCode != 3 || res[2].Detail != "exit 3" || !strings.Contains(string(res[2].Output), "broken") {
		t.Errorf("node3: exit %d, %q, output %q", res[2].ExitCode, res[2].Detail, res[2].Output)
	}
	if !strings.Contains(res[4].Detail, "255") || !strings.Contains(strings.ToLower(res[4].Detail), "refused") {
		t.Errorf("node5 detail %q does not say ssh could not connect", res[4].Detail)
	}
	for _, l := range []string{"node1: hello", "node1: from node1", "node2: from node2", "node3: broken"} {
		if !slices.Contains(lines, l) {
			t.Errorf("line %q not streamed; got %q", l, lines)
		}
	}

	sum := Summary(res)
	for _, w := range []string{"4 of 6 nodes failed", "node3: failed: exit 3", "node4: down", "node5: unreachable", "node9: unknown"} {
		if !strings.Contains(sum, w) {
			t.Errorf("summary lacks %q:\n%s", w, sum)
		}
	}
	if strings.Contains(sum, "node1") || strings.Contains(sum, "node2") {
		t.Errorf("summary names nodes that succeeded:\n%s", sum)
	}
}

func TestRunGroup(t *testing.T) {
	s := newTestSSH(t)
	o := Options{SSHArgs: s.args, Destination: s.dest}
	targets := []Target{{Name: "node1"}, {Name: "node2"}, {Name: "node3"}, {Name: "node4"}}
	res := Run(context.Background(), targets, []string{`if [ $NODE = node3 ]; then echo odd; else echo same; fi`}, o)
	if sum := Summary(res); sum != "" {
		t.Fatal(sum)
	}
	groups := GroupOutputs(res)
	var buf bytes.Buffer
	if err := WriteGrouped(&buf, groups); err != nil {
		t.Fatal(err)
	}
	want := "----------------\nnode[1-2,4]\n----------------\nsame\n" +
		"----------------\nnode3\n----------------\nodd\n"
	if buf.String() != want {
		t.Errorf("grouped output:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestRunTimeout(t *testing.T) {
	s := newTestSSH(t)
	// The test keeps the write end open, so node6's `read` waits until its
	// connection goes away: when the timeout kills the ssh client.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	o := Options{SSHArgs: s.args, Destination: s.dest, Stdin: r, Timeout: time.Second}
	res := Run(context.Background(), []Target{{Name: "node6"}}, []string{script}, o)
	if res[0].Status != Timeout || !strings.Contains(res[0].Detail, "within 1s") {
		t.Fatalf("node6: %s (%s), want a timeout", res[0].Status, res[0].Detail)
	}
	if !strings.Contains(Summary(res), "node6: timeout: no answer within 1s") {
		t.Errorf("summary:\n%s", Summary(res))
	}
}

func TestCommand(t *testing.T) {
	got := Options{}.Command("node3", 1500*time.Millisecond, []string{"uname", "-a"})
	want := []string{"ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=2", "node3", "--", "uname", "-a"}
	if !slices.Equal(got, want) {
		t.Errorf("Command = %q, want %q", got, want)
	}
}

// TestClientsInOwnSession checks that every client runs in a session of
// its own (see runOne), with a stand-in for ssh that reports its process
// and session ids from /proc.
func TestClientsInOwnSession(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "ssh")
	// Fields 1 and 6 of /proc/PID/stat: pid and session; comm is "(sh)".
	script := "#!/bin/sh\nset -- $(cat /proc/$$/stat)\necho \"$1 $6\"\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	res := Run(context.Background(), []Target{{Name: "node2"}, {Name: "node3"}}, []string{"true"}, Options{SSH: fake})
	for _, r := range res {
		if r.Status != OK {
			t.Fatalf("%s: %s (%s): %s", r.Node, r.Status, r.Detail, r.Output)
		}
		f := strings.Fields(string(r.Output))
		if len(f) != 2 || f[0] != f[1] {
			t.Errorf("%s: pid and session %q: the client does not lead a session of its own", r.Node, r.Output)
		}
	}
}
