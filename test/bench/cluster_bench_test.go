//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/agent"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// procTimes returns a process's CPU time (user+system) and its peak and
// current resident memory.
func procTimes(t *testing.T, pid int) (cpu time.Duration, rssKiB, peakKiB int64) {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which may hold spaces: ") S ppid ...".
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	cpu = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	st, _ := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	defer st.Close()
	sc := bufio.NewScanner(st)
	for sc.Scan() {
		var n int64
		if _, err := fmt.Sscanf(sc.Text(), "VmRSS: %d kB", &n); err == nil {
			rssKiB = n
		}
		if _, err := fmt.Sscanf(sc.Text(), "VmHWM: %d kB", &n); err == nil {
			peakKiB = n
		}
	}
	return
}

// TestHeadLoadBenchmark prints the head daemon's CPU and memory while 1,000
// simulated agents register and heartbeat. The simulator is the repo's test
// tool (agent.Simulate), talking HTTP to the real `clusterdebian head` process
// in a network namespace; the reference is the same head idle.
func TestHeadLoadBenchmark(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if err := netns.Check(); err != nil {
		t.Skip(err)
	}
	bin := buildBinary(t, t.TempDir())
	ctx := context.Background()
	srv, err := netns.New(ctx, netns.UniqueName(netns.TestPrefix+"hl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Delete(context.Background()) })
	// A veth pair with one end here (a device this test makes and deletes
	// with the namespace), so that the simulator in this process reaches the
	// head over a real network path.
	hostEnd := "cdthl" + strconv.Itoa(os.Getpid()%10000)
	if err := exec.Command("ip", "link", "add", hostEnd, "type", "veth", "peer", "name", "eth0", "netns", srv.Name).Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", hostEnd).Run() })
	for _, args := range [][]string{{"addr", "add", "10.200.255.254/16", "dev", hostEnd}, {"link", "set", hostEnd, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	// The head serves the simulator's subnet, so that its registry names
	// every simulated node.
	if err := srv.AddAddr(ctx, "eth0", netip.PrefixFrom(agent.SimHead, agent.SimSubnet.Bits())); err != nil {
		t.Fatal(err)
	}
	if err := srv.IP(ctx, "link", "set", "eth0", "up"); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	boot, _ := bootDir(t)
	head := startIn(t, srv, "head.log", bin, "head", "--interface", "eth0", "--subnet", agent.SimSubnet.String(),
		"--dhcp", "off", "--boot-dir", boot, "--state-dir", state, "--cluster-root", "none", "--simulated-nodes")
	testsupport.WaitFor(t, ctx, "the head to come up", 200*time.Millisecond, 30*time.Second, func() bool {
		return exec.Command("curl", "-sf", "-o", "/dev/null", "http://"+agent.SimHead.String()+"/api/v1/nodes").Run() == nil
	}, head.Output)
	tok, err := os.ReadFile(filepath.Join(state, "token"))
	if err != nil {
		t.Fatal(err)
	}
	pid := head.Cmd.Process.Pid

	const period = 30 * time.Second
	idleCPU0, _, _ := procTimes(t, pid)
	time.Sleep(period)
	idleCPU1, idleRSS, _ := procTimes(t, pid)

	const agents = 1000
	interval := 5 * time.Second
	cpu0, _, _ := procTimes(t, pid)
	sctx, cancel := context.WithTimeout(ctx, period)
	defer cancel()
	var res agent.SimResult
	var simErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		res, simErr = agent.Simulate(sctx, "http://"+agent.SimHead.String(), strings.TrimSpace(string(tok)), agents, interval)
	})
	wg.Wait()
	cpu1, rss, peak := procTimes(t, pid)
	if simErr != nil {
		t.Fatalf("simulate: %v", simErr)
	}
	idle := (idleCPU1 - idleCPU0).Seconds() / period.Seconds() * 100
	load := (cpu1 - cpu0).Seconds() / period.Seconds() * 100
	fmt.Printf("\nHead under load (%d simulated agents, heartbeat every %s, for %s)\n", agents, interval, period)
	fmt.Printf("  agents registered      %d of %d (%d register errors), %d heartbeats (%d errors), %d left\n",
		res.Registered, res.Agents, res.RegisterErrors, res.Heartbeats, res.HeartbeatErrors, res.Left)
	fmt.Printf("  head CPU               %.1f %% of one core (idle reference: %.1f %%)\n", load, idle)
	fmt.Printf("  head RSS               %.1f MiB now, %.1f MiB peak (idle reference: %.1f MiB)\n",
		float64(rss)/1024, float64(peak)/1024, float64(idleRSS)/1024)
	if res.Registered != agents {
		t.Errorf("%d of %d agents registered", res.Registered, agents)
	}
}

// TestNodeJoinBenchmark boots node1 and one node under TCG, twice: with the
// shared root (the node mounts node1's root over NFS) and with the RAM root
// (the node fetches the image over HTTP), from images built from the same
// config but for nodes.root. It prints node1's boot, each node's power-on to
// registration, and the ratios.
func TestNodeJoinBenchmark(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := buildBinary(t, dir)
	type run struct {
		root, iso  string
		head, node int
	}
	runs := []*run{{root: "shared"}, {root: "ram"}}
	for _, r := range runs {
		cfg := filepath.Join(dir, r.root+".toml")
		if err := os.WriteFile(cfg, []byte("[nodes]\nroot = \""+r.root+"\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, r.root)
		timed(t, "build ("+r.root+" root)", bin, "build", "--config", cfg, "--output", out)
		r.iso = filepath.Join(out, "clusterdebian.iso")
	}
	for _, r := range runs {
		var log syncbuf.Buffer
		w := io.MultiWriter(os.Stdout, &log)
		if old, err := vm.LoadCluster("bench"); err == nil {
			old.Down()
		}
		c, err := vm.Up(ctx, vm.UpOptions{Name: "bench", ISO: r.iso, Nodes: 1, NodeMemoryMiB: 2048, Progress: w, Attached: true})
		if err != nil {
			t.Fatal(err)
		}
		c.Down()
		text := log.String()
		head := regexp.MustCompile(`node1: .*login prompt after (\d+) s`).FindStringSubmatch(text)
		node := regexp.MustCompile(`joined as \S+ after (\d+) s`).FindStringSubmatch(text)
		if head == nil || node == nil {
			t.Fatalf("vm up did not report both times:\n%s", text)
		}
		r.head, _ = strconv.Atoi(head[1])
		r.node, _ = strconv.Atoi(node[1])
	}
	sh, ram := runs[0], runs[1]
	fmt.Printf("\nBoot times under TCG (one node)\n")
	fmt.Printf("                                            shared root   RAM root\n")
	fmt.Printf("  node1 from the ISO to its login prompt   %8d s  %8d s\n", sh.head, ram.head)
	fmt.Printf("  a node from power-on to registration     %8d s  %8d s\n", sh.node, ram.node)
	fmt.Printf("  ratio node / node1                        %8.2f    %8.2f\n", float64(sh.node)/float64(sh.head), float64(ram.node)/float64(ram.head))
	fmt.Printf("  ratio RAM-root node / shared-root node    %.2f\n", float64(ram.node)/float64(sh.node))
}
