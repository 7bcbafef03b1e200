//go:build bench

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// reliabilityConfigs are the images whose virtual clusters
// TestBootReliability boots: each suite with each root mode. The bookworm
// image is the one PVM needs (e2e's ramImg: MPI, PVM and a desktop on
// node1), so that its bootstrap is shared with the e2e tests' cache.
var reliabilityConfigs = []struct{ name, config string }{
	{"trixie-shared", "[nodes]\nroot = \"shared\"\n"},
	{"trixie-ram", "[nodes]\nroot = \"ram\"\n"},
	{"bookworm-shared", bookwormConfig("shared")},
	{"bookworm-ram", bookwormConfig("ram")},
}

func bookwormConfig(root string) string {
	return `[image]
suite = "bookworm"
desktop = "icewm"

[cluster]
parallel = ["mpi", "pvm"]

[nodes]
root = "` + root + `"

[[users]]
name = "user"
password = "startx-e2e"
`
}

// vmLock takes the lock file path (flock, exclusive) for one boot, so that
// other VM tests on the machine run between two boots and not during one
// (software-emulated guests time out when they share the CPUs); "" takes
// nothing. The returned func releases it.
func vmLock(t *testing.T, path string) func() {
	t.Helper()
	if path == "" {
		return func() {}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("VM lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("VM lock %s: %v", path, err)
	}
	return func() { f.Close() } // closing the last descriptor releases it
}

// bootOutcome is one boot of a virtual cluster.
type bootOutcome struct {
	whole   bool   // all three registered and every node answered ssh
	why     string // why not, one line
	logs    string // the folder with the serial logs of a failure
	retried bool   // vm up powered a panicked guest on once more
	sysrq   string // "" (not asked), "yes" or what came back instead
}

var joinedRe = regexp.MustCompile(`joined as (\S+) after`)

// TestBootReliability boots the virtual cluster (node1 and two nodes, under
// TCG) RELIABILITY_RUNS times in a row (default 20) for each suite and root
// mode, and prints how many came up whole: all three registered, and each
// node answering ssh from node1 within a bound. A cluster that does not
// come up is a figure, not a failure of this test: its serial logs are kept
// in a folder (RELIABILITY_LOGS, default a new one under /tmp), with the
// answers of its hung machines to SysRq t and w. Errors of the machinery
// (the image build, the cluster's network, QEMU) fail the test.
//
// RELIABILITY_CONFIGS picks configs by name (comma-separated; default all
// of reliabilityConfigs), RELIABILITY_BOOT_TIMEOUT bounds each boot stage
// (default 15m: node1 to its login prompt, then the nodes to joining),
// RELIABILITY_CACHE_DIR is the image cache (default imagebuild's), and
// VM_LOCK names a lock file taken (flock) for each boot alone, so that
// other VM tests interleave with a long run.
func TestBootReliability(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	runs := envInt(t, "RELIABILITY_RUNS", 20)
	bootTimeout := 15 * time.Minute
	if v := os.Getenv("RELIABILITY_BOOT_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("RELIABILITY_BOOT_TIMEOUT=%q: want a duration such as 15m", v)
		}
		bootTimeout = d
	}
	cache := os.Getenv("RELIABILITY_CACHE_DIR")
	if cache == "" {
		cache = imagebuild.DefaultCacheDir
	}
	configs := reliabilityConfigs
	if v := os.Getenv("RELIABILITY_CONFIGS"); v != "" {
		// In the order given.
		configs = nil
		for _, name := range strings.Split(v, ",") {
			i := slices.IndexFunc(reliabilityConfigs, func(c struct{ name, config string }) bool { return c.name == name })
			if i < 0 {
				t.Fatalf("RELIABILITY_CONFIGS=%q: no config %q (they are trixie-shared, trixie-ram, bookworm-shared, bookworm-ram)", v, name)
			}
			configs = append(configs, reliabilityConfigs[i])
		}
	}
	logs := os.Getenv("RELIABILITY_LOGS")
	if logs == "" {
		var err error
		if logs, err = os.MkdirTemp("", "clusterdebian-reliability-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("==> %d boot(s) per config; serial logs of failures in %s\n", runs, logs)

	dir := t.TempDir()
	bin := buildBinary(t, dir)
	results := make(map[string][]bootOutcome)
	for _, cf := range configs {
		cfg := filepath.Join(dir, cf.name+".toml")
		if err := os.WriteFile(cfg, []byte(cf.config), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, cf.name)
		d := timed(t, "build ("+cf.name+")", bin, "build", "--config", cfg, "--output", out, "--cache-dir", cache)
		fmt.Printf("--- %s: image built in %s\n", cf.name, d.Round(time.Second))
		iso := filepath.Join(out, imagebuild.ISOName)
		for i := 1; i <= runs; i++ {
			o := bootOnce(t, cf.name, iso, i, bootTimeout, filepath.Join(logs, fmt.Sprintf("%s-%02d", cf.name, i)))
			results[cf.name] = append(results[cf.name], o)
			state := "whole"
			if !o.whole {
				state = "NOT whole: " + o.why + " (logs: " + o.logs + ")"
			}
			fmt.Printf("--- %s boot %d/%d: %s\n", cf.name, i, runs, state)
		}
	}

	fmt.Printf("\nBoot reliability (node1 and two nodes under TCG; whole: all 3 registered, each node answers ssh)\n")
	fmt.Printf("  %-16s %8s  %s\n", "config", "whole", "notes")
	for _, cf := range configs {
		rs := results[cf.name]
		whole, retried := 0, 0
		var sysrq []string
		for _, r := range rs {
			if r.whole {
				whole++
			}
			if r.retried {
				retried++
			}
			if r.sysrq != "" && !slices.Contains(sysrq, r.sysrq) {
				sysrq = append(sysrq, r.sysrq)
			}
		}
		notes := fmt.Sprintf("%d powered on again after a guest panic", retried)
		if len(sysrq) > 0 {
			notes += "; SysRq answered: " + strings.Join(sysrq, ", ")
		}
		fmt.Printf("  %-16s %3d of %-3d %s\n", cf.name, whole, len(rs), notes)
		for i, r := range rs {
			if !r.whole {
				fmt.Printf("      boot %d: %s\n        logs: %s\n", i+1, r.why, r.logs)
			}
		}
	}
}

// bootOnce boots the cluster once, under the VM lock, and takes it down.
func bootOnce(t *testing.T, config, iso string, i int, bootTimeout time.Duration, failDir string) bootOutcome {
	t.Helper()
	unlock := vmLock(t, os.Getenv("VM_LOCK"))
	defer unlock()
	name := "rel-" + strings.ReplaceAll(config, "bookworm", "bw")
	if old, err := vm.LoadCluster(name); err == nil {
		old.Down()
	} else if !errors.Is(err, vm.ErrNoCluster) {
		if err := vm.Down(name); err != nil {
			t.Fatalf("removing the leftover cluster %s: %v", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*bootTimeout)
	defer cancel()
	var progress syncbuf.Buffer
	c, err := vm.Up(ctx, vm.UpOptions{Name: name, ISO: iso, Nodes: 2, MemoryMiB: 2048, NodeMemoryMiB: 1536,
		Accel: "tcg", Attached: true, BootTimeout: bootTimeout, Progress: io.MultiWriter(&progress, prefixed(config, i))})
	if c == nil {
		t.Fatalf("%s boot %d: vm up made no cluster: %v", config, i, err)
	}
	defer func() {
		if err := c.Down(); err != nil {
			t.Errorf("vm down %s: %v", name, err)
		}
	}()
	o := bootOutcome{retried: strings.Contains(progress.String(), "powering")}
	if err == nil {
		err = sshEach(ctx, c, joinedRe.FindAllStringSubmatch(progress.String(), -1))
		if err == nil {
			o.whole = true
			o.sysrq = askHelp(ctx, c)
			return o
		}
	}
	o.why = firstLine(err.Error())
	o.logs = failDir
	keepFailure(t, ctx, c, failDir, progress.String(), err)
	return o
}

// sshEach has node1's default user run hostname on each joined node over
// ssh, within a bound, as TestVirtualCluster's ssh step does.
func sshEach(ctx context.Context, c *vm.Cluster, joined [][]string) error {
	if len(joined) != 2 {
		return fmt.Errorf("%d nodes joined, want 2", len(joined))
	}
	for _, j := range joined {
		node := j[1]
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		out, errOut, code, err := c.Exec(sctx, vm.HeadVM, "runuser", "-u", "user", "--",
			"ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=60", node, "hostname")
		cancel()
		if err != nil {
			return fmt.Errorf("ssh %s from node1: %w", node, err)
		}
		if code != 0 || strings.TrimSpace(out) != node {
			return fmt.Errorf("ssh %s from node1: exit %d, %q %s", node, code, strings.TrimSpace(out), firstLine(errOut))
		}
	}
	return nil
}

// askHelp presses SysRq h on the first node of a whole cluster and says
// whether its serial log shows the kernel's help ("yes") or what else.
func askHelp(ctx context.Context, c *vm.Cluster) string {
	m, err := c.Machine(ctx, "vm2")
	if err != nil {
		return "error: " + err.Error()
	}
	before, _ := os.ReadFile(m.SerialPath)
	if err := m.SysRq(ctx, "h"); err != nil {
		return "error: " + err.Error()
	}
	for range 60 {
		now, _ := os.ReadFile(m.SerialPath)
		if len(now) > len(before) {
			gained := string(now[len(before):])
			if strings.Contains(gained, "sysrq: HELP") {
				return "yes"
			}
			if strings.Contains(gained, "disabled") {
				return "disabled"
			}
		}
		time.Sleep(time.Second)
	}
	return "no answer in 60 s"
}

// keepFailure asks each running VM that shows no login prompt for its
// blocked and all tasks (SysRq w and t), asks node1 what it sees of the
// nodes, and copies every serial log and what vm up said into dir.
func keepFailure(t *testing.T, ctx context.Context, c *vm.Cluster, dir, progress string, upErr error) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	notes := []string{"vm up: " + upErr.Error(), "", progress}
	for _, v := range c.Machines() {
		if !v.Running() || strings.Contains(v.Serial(), " login: ") {
			continue
		}
		m, err := c.Machine(ctx, v.Name)
		if err == nil {
			err = m.SysRq(ctx, "wt")
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: sysrq: %v", v.Name, err))
			continue
		}
		notes = append(notes, v.Name+": shows no login prompt; asked SysRq w and t (see its serial log)")
		notes = append(notes, virtioState(ctx, m, v.Name)...)
	}
	// The taps' counters, from the host's side of the cluster switch: TX is
	// what reached a VM, RX what it sent.
	if out, err := exec.CommandContext(ctx, "ip", "-n", c.NetNS, "-s", "link").CombinedOutput(); err == nil {
		notes = append(notes, "the cluster switch (ip -n "+c.NetNS+" -s link):\n"+string(out))
	}
	// What node1 sees of the cluster network, when its agent answers.
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	out, _, _, err := c.Exec(sctx, vm.HeadVM, "sh", "-c",
		"ip -s link; ip neigh; for a in $(ip neigh | cut -d' ' -f1); do ping -c 2 -W 2 $a; done; nfsstat -s 2>&1 | head -20")
	cancel()
	if err != nil {
		out = "(node1's agent: " + err.Error() + ")"
	}
	notes = append(notes, "node1:\n"+out)
	// Give a task dump under TCG time to reach the serial line.
	time.Sleep(20 * time.Second)
	for _, v := range c.Machines() {
		src := filepath.Join(v.Dir, vm.SerialLogFile)
		data, err := os.ReadFile(src)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", v.Name, err))
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, v.Name+".serial.log"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte(strings.Join(notes, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// virtioNetPath finds the QOM path of a virtio-net device in QEMU's
// `info virtio` ("/machine/peripheral-anon/device[0]/virtio-backend [virtio-net]").
var virtioNetPath = regexp.MustCompile(`(?m)^(\S+)\s+\[virtio-net\]`)

// virtioState asks QEMU for the hung machine's network card: its link,
// and the state of its receive (0) and transmit (1) queues. A receive
// queue whose driver offered no buffers (avail = used) points at the
// guest's driver having stopped; one with buffers that QEMU does not fill
// points at QEMU or the host.
func virtioState(ctx context.Context, m *vm.Machine, name string) []string {
	var notes []string
	for _, cmd := range []string{"info network", "info virtio"} {
		out, err := m.Monitor(ctx, cmd)
		if err != nil {
			return append(notes, fmt.Sprintf("%s: %s: %v", name, cmd, err))
		}
		notes = append(notes, fmt.Sprintf("%s QEMU %s:\n%s", name, cmd, out))
		if cmd != "info virtio" {
			continue
		}
		for _, match := range virtioNetPath.FindAllStringSubmatch(out, -1) {
			for _, q := range []string{"info virtio-status " + match[1], "info virtio-queue-status " + match[1] + " 0",
				"info virtio-queue-status " + match[1] + " 1"} {
				if out, err := m.Monitor(ctx, q); err == nil {
					notes = append(notes, fmt.Sprintf("%s QEMU %s:\n%s", name, q, out))
				}
			}
		}
	}
	return notes
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// prefixed writes vm up's progress lines to stdout behind the config and
// boot number.
func prefixed(config string, i int) io.Writer {
	return &prefixWriter{prefix: fmt.Sprintf("    [%s %d] ", config, i)}
}

type prefixWriter struct{ prefix string }

func (p *prefixWriter) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			os.Stdout.WriteString(p.prefix + line)
		}
	}
	return len(b), nil
}
