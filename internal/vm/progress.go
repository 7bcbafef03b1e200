package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// Progress of `vm up` comes from the VMs' serial logs: each boot passes
// milestones whose text is recognisable there (firmware, network boot
// loader, kernel, login prompt). Whether a node has joined is node1's to
// say: `clusterdebian status --json`, run on node1 through its guest agent.

// milestone is one recognisable step of a boot.
type milestone struct {
	name string
	re   *regexp.Regexp
}

var (
	// Any output at all: with no VGA, SeaBIOS says nothing on the serial
	// line, and GRUB's menu is the first text.
	loaderRe   = regexp.MustCompile(`GRUB|\S`)
	pxeRe      = regexp.MustCompile(`iPXE|PXE`)
	kernelRe   = regexp.MustCompile(`Linux version \S+|\[\s*\d+\.\d+\] `)
	anyLoginRe = regexp.MustCompile(`(?m)(\S+) login: ?`)
)

var headMilestones = []milestone{
	{"boot loader", loaderRe},
	{"kernel", kernelRe},
	{"login prompt", regexp.MustCompile(regexp.QuoteMeta(HeadVM) + ` login:`)},
}

var nodeMilestones = []milestone{
	{"PXE", pxeRe},
	{"kernel", kernelRe},
	{"login prompt", anyLoginRe},
}

// watchBoot polls the machine's serial log and calls report once per
// milestone reached, in order (milestones passed unseen between two polls
// are reported together). It returns when the last milestone is reached,
// with its match, or when ctx ends or QEMU exits.
func watchBoot(ctx context.Context, m *Machine, ms []milestone, report func(name string, elapsed time.Duration)) (string, error) {
	start := time.Now()
	next := 0
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		serial := m.Serial()
		last := -1
		var match string
		for i := next; i < len(ms); i++ {
			if s := ms[i].re.FindString(serial); s != "" {
				last, match = i, s
			}
		}
		for ; next <= last; next++ {
			report(ms[next].name, time.Since(start))
		}
		if next == len(ms) {
			return match, nil
		}
		// A guest whose kernel panicked never gets further: say so at once.
		if i := strings.Index(serial, "Kernel panic - not syncing"); i >= 0 {
			line, _, _ := strings.Cut(serial[i:], "\n")
			return "", fmt.Errorf("%w before its %s: %s", ErrPanicked, ms[next].name, strings.TrimSpace(line))
		}
		if !m.Running() {
			err := fmt.Errorf("%w before its %s", ErrExited, ms[next].name)
			if q := qemuLog(m.Spec.Dir); q != "" {
				err = fmt.Errorf("%w; QEMU said: %s", err, truncate(q, 600))
			}
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no %s after %s: %w", ms[next].name, time.Since(start).Round(time.Second), ctx.Err())
		case <-t.C:
		}
	}
}

// ErrPanicked is returned when a guest's kernel panicked while booting.
var ErrPanicked = errors.New("the guest kernel panicked")

func secs(d time.Duration) string { return fmt.Sprintf("%d s", int(d.Seconds()+0.5)) }

// waitHead shows node1's boot on one line, up to its login prompt: by then
// the head daemon serves, since the getty waits for it.
func (c *Cluster) waitHead(ctx context.Context, m *Machine, w io.Writer) error {
	fmt.Fprintf(w, "%s: booting %s ...", HeadVM, filepath.Base(c.ISO))
	_, err := watchBoot(ctx, m, headMilestones, func(name string, d time.Duration) {
		if name == "login prompt" {
			fmt.Fprintf(w, " login prompt after %s\n", secs(d))
		} else {
			fmt.Fprintf(w, " %s (%s) ...", name, secs(d))
		}
	})
	if err != nil {
		fmt.Fprintln(w)
		return fmt.Errorf("%s: %w", HeadVM, err)
	}
	return nil
}

// joinTimeout is how long a node that has shown its login prompt may take to
// appear as up in node1's status before Up gives up on it; agentWait, how
// long node1's guest agent may take to answer after node1's login prompt;
// statusPoll, how often node1's status is asked for.
// promptGrace is how long a node may be up in node1's status without its
// serial login prompt before it counts as joined anyway: under a loaded
// TCG host, a node's serial getty can fail ("Dependency failed" when udev
// announces ttyS0 late) while the node itself runs fine.
var (
	joinTimeout = 5 * time.Minute
	agentWait   = 3 * time.Minute
	statusPoll  = 5 * time.Second
	promptGrace = 3 * time.Minute
)

// waitNodes shows the nodes' boots, a line per milestone, and returns when
// every node has joined.
func (c *Cluster) waitNodes(ctx context.Context, machines []*Machine, w io.Writer) error {
	head := c.vm(HeadVM)
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, format+"\n", args...)
	}
	if len(machines) == 0 {
		return nil
	}
	st := newStatusWatch(c, head, say)
	// The watch ends with this call: Up may call it once per node.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go st.run(wctx)

	errs := make([]error, len(machines))
	var restartMu sync.Mutex // startVM saves the cluster's state file
	var wg sync.WaitGroup
	for i, m := range machines {
		v := c.vm(strings.TrimPrefix(m.Spec.Name, c.Name+"-"))
		label := fmt.Sprintf("%s (%s)", v.Name, v.MAC)
		wg.Go(func() {
			start := time.Now()
			milestone := func(name string, d time.Duration) {
				if name != "login prompt" {
					say("%s: %s %s", label, name, secs(d))
				}
			}
			login, upName, err := st.watchNode(ctx, m, v.MAC, milestone)
			if errors.Is(err, ErrPanicked) {
				// As for node1 in Up: one more power-on.
				say("%s: %v; powering it on once more", label, err)
				m.Stop()
				restartMu.Lock()
				m2, serr := c.startVM(v)
				restartMu.Unlock()
				if err = serr; err == nil {
					start = time.Now()
					login, upName, err = st.watchNode(ctx, m2, v.MAC, milestone)
				}
			}
			if err == nil && upName != "" {
				say("%s: joined as %s after %s, with no login prompt on its serial console for %s (see %s)", label, upName, secs(time.Since(start)), promptGrace, m.SerialPath)
				return
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", label, err)
				say("%s: %v", label, err)
				return
			}
			promptName := anyLoginRe.FindStringSubmatch(login)[1]
			say("%s: login prompt of %s %s", label, promptName, secs(time.Since(start)))
			name, err := st.waitJoined(ctx, v.MAC, promptName)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", label, err)
				say("%s: %v", label, err)
				return
			}
			say("%s: joined as %s after %s", label, name, secs(time.Since(start)))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// statusWatch polls node1's `clusterdebian status --json` through its guest
// agent. When node1 has no agent answering, or a binary without the status
// command, it falls back to the login prompt: a node at its login prompt
// counts as joined. An answer that is not a node list is an error, never
// "no nodes yet".
type statusWatch struct {
	c    *Cluster
	head *VMState
	say  func(string, ...any)

	mu       sync.Mutex
	decided  bool                     // mode known
	fallback bool                     // no status: the login prompt counts
	nodes    map[string]registry.Node // by MAC, as contract.NormalizeMAC writes it
	err      error                    // the status is not a node list
	raw      string                   // the last status output, for error messages
	changed  chan struct{}
}

func newStatusWatch(c *Cluster, head *VMState, say func(string, ...any)) *statusWatch {
	return &statusWatch{c: c, head: head, say: say, changed: make(chan struct{})}
}

// statusArgs is the command run on node1 to learn which nodes are up.
var statusArgs = []string{"clusterdebian", "status", "--json"}

// update records what the last look found and wakes the waiters.
func (s *statusWatch) update(fallback bool, nodes map[string]registry.Node, raw string, err error) {
	s.mu.Lock()
	s.decided, s.fallback = true, fallback
	if nodes != nil {
		s.nodes, s.raw = nodes, raw
	}
	if err != nil {
		s.err, s.raw = err, raw
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *statusWatch) run(ctx context.Context) {
	sock := filepath.Join(s.head.Dir, QGASocket)
	// The agent starts about when the getty does, later on a busy host.
	agentCtx, cancel := context.WithTimeout(ctx, agentWait)
	var err error
	for {
		if err = QGAPing(agentCtx, sock); err == nil || agentCtx.Err() != nil {
			break
		}
		select {
		case <-agentCtx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	cancel()
	if err != nil {
		if ctx.Err() == nil && agentCtx.Err() != nil {
			err = ErrNoAgent // not the dial that the deadline cut short
		}
		if errors.Is(err, ErrNoAgent) {
			s.say("%s: no guest agent answers (is qemu-guest-agent in the image?); a node counts as joined at its login prompt", HeadVM)
		} else {
			s.say("%s: its guest agent: %v; a node counts as joined at its login prompt", HeadVM, err)
		}
		s.update(true, nil, "", nil)
		return
	}
	for {
		ectx, ecancel := context.WithTimeout(ctx, time.Minute)
		out, errOut, code, err := QGAExec(ectx, sock, statusArgs[0], statusArgs[1:])
		ecancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && code == 0:
			nodes, perr := nodesByMAC(out)
			if perr != nil {
				s.update(false, nil, string(out), fmt.Errorf("%s's %s: %w", HeadVM, strings.Join(statusArgs, " "), perr))
				return
			}
			s.update(false, nodes, string(out), nil)
		case err == nil && (strings.Contains(string(errOut), "unknown command") || strings.Contains(string(errOut), "unknown flag")):
			s.say("%s: its clusterdebian has no status command yet; a node counts as joined at its login prompt", HeadVM)
			s.update(true, nil, "", nil)
			return
		case err == nil:
			// The head may not be ready to answer yet: keep asking.
			s.mu.Lock()
			s.raw = fmt.Sprintf("exit code %d: %s", code, strings.TrimSpace(string(errOut)))
			s.mu.Unlock()
		default:
			var qe *QGAError
			if errors.As(err, &qe) {
				// guest-exec itself failed: no such program.
				s.say("%s: cannot run %s (%v); a node counts as joined at its login prompt", HeadVM, statusArgs[0], err)
				s.update(true, nil, "", nil)
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(statusPoll):
		}
	}
}

// nodesByMAC reads the output of `clusterdebian status --json`, the head's
// node list (registry.DecodeNodes), keyed by MAC.
func nodesByMAC(out []byte) (map[string]registry.Node, error) {
	list, err := registry.DecodeNodes(out)
	if err != nil {
		return nil, err
	}
	nodes := make(map[string]registry.Node, len(list))
	for _, n := range list {
		mac, err := contract.NormalizeMAC(n.MAC)
		if err != nil {
			return nil, fmt.Errorf("not a node list: node %q: %w", n.Name, err)
		}
		nodes[mac] = n
	}
	return nodes, nil
}

// watchNode is watchBoot of a node's milestones, except that a node up in
// node1's status (not in fallback mode) for promptGrace without a login
// prompt counts as joined: then it returns the node's registry name as
// upName. login is the prompt's match otherwise.
func (s *statusWatch) watchNode(ctx context.Context, m *Machine, mac string, report func(string, time.Duration)) (login, upName string, err error) {
	bootCtx, stop := context.WithCancel(ctx)
	defer stop()
	early := make(chan string, 1)
	go func() {
		name, ok := s.upFor(bootCtx, mac, promptGrace)
		if ok {
			early <- name
			stop()
		}
	}()
	login, err = watchBoot(bootCtx, m, nodeMilestones, report)
	if err != nil && ctx.Err() == nil {
		select {
		case name := <-early:
			return "", name, nil
		default:
		}
	}
	return login, "", err
}

// upFor reports the node's name once it has been up in node1's status for
// d, polling as the status is updated; false when ctx ends first or the
// watch is in fallback mode.
func (s *statusWatch) upFor(ctx context.Context, mac string, d time.Duration) (string, bool) {
	mac, err := contract.NormalizeMAC(mac)
	if err != nil {
		return "", false
	}
	var since time.Time
	for {
		s.mu.Lock()
		decided, fallback, n, changed := s.decided, s.fallback, s.nodes[mac], s.changed
		s.mu.Unlock()
		if decided && fallback {
			return "", false
		}
		switch {
		case n.State != registry.StateUp:
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= d:
			return n.Name, true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", false
		case <-time.After(statusPoll):
		}
	}
}

// waitJoined waits until the node with mac is up in node1's status and
// returns its name; in fallback mode it returns promptName at once.
func (s *statusWatch) waitJoined(ctx context.Context, mac, promptName string) (string, error) {
	mac, err := contract.NormalizeMAC(mac)
	if err != nil {
		return "", err
	}
	deadline := time.After(joinTimeout)
	for {
		s.mu.Lock()
		decided, fallback, n, failed, raw, changed := s.decided, s.fallback, s.nodes[mac], s.err, s.raw, s.changed
		s.mu.Unlock()
		if failed != nil {
			return "", fmt.Errorf("%w; it printed: %s", failed, truncate(raw, 600))
		}
		if decided && fallback {
			return promptName, nil
		}
		if n.State == registry.StateUp {
			return n.Name, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("not up in %s's status: %w", HeadVM, ctx.Err())
		case <-deadline:
			return "", fmt.Errorf("at its login prompt for %s but not up in %s's %s, which says: %s", joinTimeout, HeadVM, strings.Join(statusArgs, " "), truncate(raw, 600))
		}
	}
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + " ..."
	}
	return s
}

// qemuLog is what QEMU said in its log, without the warning that the
// etc/sercon-port setting (see startVM) always draws: it is meant for
// SeaBIOS, which reads it under that name only.
func qemuLog(dir string) string {
	data, _ := os.ReadFile(filepath.Join(dir, QEMULogFile))
	var keep []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.TrimSpace(line) != "" && !strings.Contains(line, `should be prefixed with "opt/"`) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}
