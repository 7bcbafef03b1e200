// Package pexec runs one command on many nodes at once over ssh, the way
// pdsh does: a bounded number of ssh clients at a time, each with a
// deadline, output kept per node, and a verdict per node that says why it
// failed (the command's exit code, a timeout, ssh could not connect, or the
// node was down and not contacted at all).
//
// It shells out to OpenSSH rather than speaking SSH itself: the cluster's
// trust (CA-certified host keys in ssh_known_hosts, users' keys in their
// shared homes) is OpenSSH configuration, and users' own ~/.ssh/config must
// apply as it does for a plain `ssh node3`.
package pexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/hostlist"
)

// Defaults of Options.
const (
	DefaultTimeout = 30 * time.Second
	DefaultFanout  = 64
)

// sshError is the exit status OpenSSH uses for its own failures.
const sshError = 255

// NotStarted is the Detail of an Error result whose command never started
// on its node: the context ended while it waited for its turn (Fanout).
const NotStarted = "cancelled before it started"

// Status is a node's verdict.
type Status int

// Verdicts, from good to bad.
const (
	// OK: the command ran and exited 0.
	OK Status = iota
	// Failed: the command ran and exited non-zero (Result.ExitCode).
	Failed
	// Unreachable: ssh itself failed (exit 255): no connection, refused
	// key, host key mismatch. A command that exits 255 looks the same.
	Unreachable
	// Timeout: no end within Options.Timeout; the ssh client was killed.
	Timeout
	// Down: the registry lists the node as down; it was not contacted.
	Down
	// Unknown: the node is not in the registry; it was not contacted.
	Unknown
	// Error: ssh could not be started at all.
	Error
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Failed:
		return "failed"
	case Unreachable:
		return "unreachable"
	case Timeout:
		return "timeout"
	case Down:
		return "down"
	case Unknown:
		return "unknown"
	case Error:
		return "error"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// Target is one node to run on.
type Target struct {
	Name string
	// Skip, when not OK, is the verdict to give without contacting the
	// node (Down, Unknown).
	Skip Status
}

// Result is what happened on one node.
type Result struct {
	Node     string
	Status   Status
	ExitCode int // of the command (or ssh); -1 when it did not exit
	// Output is the command's stdout and stderr, interleaved as written.
	Output []byte
	// Detail is the reason in words, for reports: "exit 3",
	// "no answer within 30s", "ssh: connect to host node4 port 22:
	// Connection refused".
	Detail string
}

// Options tune Run. The zero value runs `ssh node -- CMD` with the defaults.
type Options struct {
	// Timeout bounds each node's run, connection included
	// (DefaultTimeout if 0).
	Timeout time.Duration
	// Fanout is how many nodes run at once (DefaultFanout if 0).
	Fanout int
	// SSH is the ssh client ("ssh" if empty).
	SSH string
	// SSHArgs come before the destination, after the options Run sets
	// itself (BatchMode, ConnectTimeout).
	SSHArgs []string
	// Destination maps a node name to the ssh destination and arguments
	// of its own (nil: the name itself). Tests point node names at local
	// sshds with it: "node3" -> "root@127.0.0.1", "-p", "2203".
	Destination func(node string) (dest string, args []string)
	// Stdin is every ssh client's standard input (nil: /dev/null, so that
	// a command that reads input sees its end at once instead of hanging).
	// A file, not any reader: the clients share it, and a file is handed
	// to each as it is, not copied by a goroutine per client.
	Stdin *os.File
	// OnLine, if not nil, gets each complete output line as it arrives,
	// without its newline (and a last unterminated one at the end), from
	// many goroutines: it must be safe for concurrent use.
	OnLine func(node, line string)
}

// Command builds the ssh command line Run uses for node: the program and
// its arguments.
func (o Options) Command(node string, timeout time.Duration, argv []string) []string {
	ssh := o.SSH
	if ssh == "" {
		ssh = "ssh"
	}
	// ConnectTimeout in whole seconds, at least 1: ssh takes no less, and
	// 0 would mean the system default.
	ct := max(int((timeout+time.Second-1)/time.Second), 1)
	args := []string{ssh, "-o", "BatchMode=yes", "-o", "ConnectTimeout=" + strconv.Itoa(ct)}
	args = append(args, o.SSHArgs...)
	dest := node
	if o.Destination != nil {
		var extra []string
		dest, extra = o.Destination(node)
		args = append(args, extra...)
	}
	args = append(args, dest, "--")
	return append(args, argv...)
}

// Run runs argv on every target, at most Fanout at a time, and returns one
// Result per target, in the targets' order. It returns when every node has
// finished or timed out; cancelling ctx kills the clients still running.
func Run(ctx context.Context, targets []Target, argv []string, o Options) []Result {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Fanout <= 0 {
		o.Fanout = DefaultFanout
	}
	results := make([]Result, len(targets))
	sem := make(chan struct{}, o.Fanout)
	var wg sync.WaitGroup
	for i, t := range targets {
		if t.Skip != OK {
			results[i] = Result{Node: t.Name, Status: t.Skip, ExitCode: -1, Detail: skipDetail(t.Skip)}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = Result{Node: t.Name, Status: Error, ExitCode: -1, Detail: NotStarted}
				return
			}
			defer func() { <-sem }()
			results[i] = runOne(ctx, t.Name, argv, o)
		}()
	}
	wg.Wait()
	return results
}

func skipDetail(s Status) string {
	switch s {
	case Down:
		return "down (not heartbeating), not contacted"
	case Unknown:
		return "not in the head's node list, not contacted"
	}
	return s.String() + ", not contacted"
}

// runOne runs argv on one node.
func runOne(ctx context.Context, node string, argv []string, o Options) Result {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	line := o.Command(node, o.Timeout, argv)
	cmd := exec.CommandContext(ctx, line[0], line[1:]...)
	// Without this a killed ssh whose output pipe some descendant still
	// holds (a ProxyCommand, a ControlMaster) would keep Wait waiting.
	cmd.WaitDelay = 2 * time.Second
	// Each client in a session of its own, as pdsh does: it can neither
	// prompt on nor get signals from the caller's terminal (Ctrl-C stops
	// the caller, whose context then stops the clients), and where the
	// kernel shares the CPU out by session (autogroup, on by default),
	// n clients get n sessions' share of a busy machine rather than one.
	// In one session, 50 clients on a loaded 2-core machine took three
	// times as long as pdsh's (test/bench TestExecBenchmark). A caller
	// that dies takes its clients along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if o.Stdin != nil {
		cmd.Stdin = o.Stdin
	}
	out := &lineBuffer{node: node, onLine: o.OnLine}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	out.flush()
	r := Result{Node: node, Output: out.bytes(), ExitCode: -1}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.Status, r.ExitCode, r.Detail = OK, 0, "exit 0"
	case ctx.Err() == context.DeadlineExceeded:
		r.Status, r.Detail = Timeout, fmt.Sprintf("no answer within %v", o.Timeout)
	case ctx.Err() != nil:
		r.Status, r.Detail = Error, "cancelled"
	case errors.As(err, &ee) && ee.ExitCode() == sshError:
		r.Status, r.ExitCode = Unreachable, sshError
		r.Detail = "ssh failed (exit 255)"
		if l := lastLine(r.Output); l != "" {
			r.Detail += ": " + l
		}
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		r.Status, r.ExitCode, r.Detail = Failed, ee.ExitCode(), "exit "+strconv.Itoa(ee.ExitCode())
	default:
		r.Status, r.Detail = Error, err.Error()
	}
	return r
}

// lastLine is the last non-empty line of out: where ssh puts its reason.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// lineBuffer keeps a node's output and hands complete lines to onLine.
type lineBuffer struct {
	node   string
	onLine func(node, line string)

	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all.Write(p)
	if b.onLine == nil {
		return len(p), nil
	}
	b.partial = append(b.partial, p...)
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		b.onLine(b.node, string(b.partial[:i]))
		b.partial = b.partial[i+1:]
	}
	return len(p), nil
}

// flush hands on a last line without a newline.
func (b *lineBuffer) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.onLine != nil && len(b.partial) > 0 {
		b.onLine(b.node, string(b.partial))
	}
	b.partial = nil
}

func (b *lineBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.all.Bytes())
}

// Group is a set of nodes that printed the same output.
type Group struct {
	Nodes  []string
	Output []byte
}

// GroupOutputs groups results by identical output, like `dshbak -c`: the
// groups come in the order of their first node in results.
func GroupOutputs(results []Result) []Group {
	var groups []Group
	index := map[string]int{}
	for _, r := range results {
		if r.Status == Down || r.Status == Unknown {
			continue // no output: they never ran
		}
		k := string(r.Output)
		i, ok := index[k]
		if !ok {
			i = len(groups)
			index[k] = i
			groups = append(groups, Group{Output: r.Output})
		}
		groups[i].Nodes = append(groups[i].Nodes, r.Node)
	}
	return groups
}

// WriteGrouped writes groups as dshbak -c does: a rule, the hostlist of the
// group's nodes, a rule, the output.
func WriteGrouped(w io.Writer, groups []Group) error {
	for _, g := range groups {
		hl := hostlist.Compress(g.Nodes)
		rule := strings.Repeat("-", max(len(hl), 16))
		if _, err := fmt.Fprintf(w, "%s\n%s\n%s\n", rule, hl, rule); err != nil {
			return err
		}
		out := g.Output
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(slices.Clip(out), '\n')
		}
		if _, err := w.Write(out); err != nil {
			return err
		}
	}
	return nil
}

// Failures returns the results that are not OK.
func Failures(results []Result) []Result {
	var bad []Result
	for _, r := range results {
		if r.Status != OK {
			bad = append(bad, r)
		}
	}
	return bad
}

// Summary says which nodes failed and why, one line per node, "" when
// none did.
func Summary(results []Result) string {
	bad := Failures(results)
	if len(bad) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d nodes failed:\n", len(bad), len(results))
	for _, r := range bad {
		fmt.Fprintf(&b, "  %s: %s: %s\n", r.Node, r.Status, r.Detail)
	}
	return b.String()
}
