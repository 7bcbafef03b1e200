package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/verify"
)

// probeCmd is the hidden subcommand verify starts on each node over ssh.
const probeCmd = "verify-probe"

func newVerifyCmd() *cobra.Command {
	var (
		headURL, configPath, stateDir string
		bars                          []string
		asJSON, noMPI                 bool
		seconds                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "verify [--json] [--bar KEY=VALUE]...",
		Short: "Test the cluster: each node's card, memory and clock, every pair's network, MPI",
		Long: `verify is the cluster's acceptance test, run on node1. It reports each
node's link speed, duplex and MTU (its cluster card's), cores, memory and
clock offset from node1; measures the round trip and TCP throughput (each
way) of every pair of nodes, in rounds of disjoint pairs (N-1 rounds for N
nodes, N when N is odd), so that it takes O(N) time; and runs an MPI
ping-pong and allreduce with one rank on each node.

Outliers are named with their likely cause: a card slower than the others,
half duplex, an MTU that differs, half the memory of the others, a clock off
node1's, a node slow with every partner (its link) or a pair slow only with
each other (their path).

verify exits 1 when anything is below the bar. The bar is cluster.toml's
[verify] section, each key of which --bar overrides for one run. The last
report is kept in the head's state folder and shown on the status page and
in /metrics.`,
		Example: `  clusterdebian verify
  clusterdebian verify --json
  clusterdebian verify --bar min_bandwidth_ratio=0.3 --bar mpi=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if seconds < 100*time.Millisecond || seconds > time.Minute {
				return fmt.Errorf("--duration: %v is outside 100ms..1m", seconds)
			}
			cfg, err := loadSystemConfig(configPath)
			if err != nil {
				return err
			}
			bar := cfg.Verify
			if err := bar.SetAll(bars); err != nil {
				return fmt.Errorf("--bar: %w", err)
			}
			if stateDir == "" {
				stateDir = cfg.Head.StateDir
			}
			c, err := headClient(headURL, "", nil)
			if err != nil {
				return err
			}
			nodes, err := listNodes(cmd.Context(), c)
			if err != nil {
				return err
			}
			progress := func(format string, args ...any) {
				fmt.Fprintf(cmd.ErrOrStderr(), "verify: "+format+"\n", args...)
			}
			if asJSON {
				progress = func(string, ...any) {}
			}
			rep, err := runVerify(cmd.Context(), nodes, bar, seconds, !noMPI, progress)
			if err != nil {
				return err
			}
			if err := saveReport(stateDir, rep); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "verify: the status page will not show this run: %v\n", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				err = enc.Encode(rep)
			} else {
				err = verify.WriteTable(out, rep)
			}
			if err != nil {
				return err
			}
			if !rep.Pass {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&headURL, "head", "", "the head's address or URL (default http://127.0.0.1)")
	f.StringVarP(&configPath, "config", "c", "", "cluster.toml with the [verify] bar (default: "+systemConfig+" if present, else the embedded default)")
	f.StringArrayVar(&bars, "bar", nil, "set a key of the bar for this run, KEY=VALUE: "+strings.Join(verify.BarKeys, ", "))
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&noMPI, "no-mpi", false, "leave out the MPI run")
	f.DurationVar(&seconds, "duration", time.Second, "how long each pair streams each way")
	f.StringVar(&stateDir, "state-dir", "", "the head's state folder, where the last report is kept (head.state_dir)")
	return cmd
}

// newVerifyProbeCmd is the probe verify starts on each node: it prints
// "listening ADDR" and answers until told to quit or idle.
func newVerifyProbeCmd() *cobra.Command {
	var (
		listen, token string
		idle          time.Duration
	)
	cmd := &cobra.Command{
		Use:    probeCmd,
		Short:  "Serve verify's network probe on this node (started by verify)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" {
				return errors.New("--token is required")
			}
			host, _, err := net.SplitHostPort(listen)
			ip := net.ParseIP(host)
			if err != nil || ip == nil {
				return fmt.Errorf("--listen: %q is not ADDRESS:PORT", listen)
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "listening", ln.Addr())
			p := &verify.Probe{Token: token, Facts: func() (verify.Facts, error) { return verify.ReadFacts(verify.Host{}, ip) }}
			return p.Serve(cmd.Context(), ln, idle)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "", "ADDRESS:PORT to serve on (port 0: any)")
	f.StringVar(&token, "token", "", "the run's token, which every request must carry")
	f.DurationVar(&idle, "idle", 2*time.Minute, "stop after this long without a request")
	return cmd
}

// loadSystemConfig loads path, or node1's cluster.toml when path is
// empty and it exists, else the embedded default.
func loadSystemConfig(path string) (*config.Config, error) {
	if path == "" {
		if _, err := os.Stat(systemConfig); err == nil {
			path = systemConfig
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("--config: %w", err)
		}
	}
	return config.Load(path)
}

// runVerify starts a probe here (node1) and on every other node that is
// up, over ssh, runs the test and stops the probes.
func runVerify(ctx context.Context, nodes []registry.Node, bar verify.Bar, d time.Duration, mpi bool, progress func(string, ...any)) (*verify.Report, error) {
	var head *registry.Node
	var up []registry.Node
	for _, n := range nodes {
		if n.State != registry.StateUp {
			progress("%s is down, left out", n.Name)
			continue
		}
		if n.Role == registry.RoleHead {
			head = &n
		}
		up = append(up, n)
	}
	if head == nil {
		return nil, errors.New("the head lists no node1 that is up")
	}
	if _, err := (verify.Host{}).InterfaceOf(net.ParseIP(head.IP)); err != nil {
		return nil, fmt.Errorf("verify runs on node1, which holds %s: %w", head.IP, err)
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(raw)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	progress("starting a probe on %d nodes", len(up))
	vnodes := make([]verify.Node, len(up))
	ready := make([]chan string, len(up)) // the probe's address, or "error: why"
	for i, n := range up {
		vnodes[i] = verify.Node{Name: n.Name}
		if n.Name == head.Name {
			ln, err := net.Listen("tcp", net.JoinHostPort(n.IP, "0"))
			if err != nil {
				vnodes[i].Error = err.Error()
				continue
			}
			vnodes[i].Addr = ln.Addr().String()
			p := &verify.Probe{Token: token, Facts: func() (verify.Facts, error) { return verify.ReadFacts(verify.Host{}, net.ParseIP(n.IP)) }}
			wg.Add(1)
			go func() { defer wg.Done(); p.Serve(ctx, ln, 10*time.Minute) }()
			continue
		}
		ready[i] = make(chan string, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			say := func(s string) {
				select {
				case ready[i] <- s:
				default:
				}
			}
			argv := []string{"clusterdebian", probeCmd, "--listen", net.JoinHostPort(n.IP, "0"), "--token", token}
			res := pexec.Run(ctx, []pexec.Target{{Name: n.Name}}, argv, pexec.Options{Timeout: time.Hour,
				OnLine: func(_, line string) {
					if addr, ok := strings.CutPrefix(line, "listening "); ok {
						say(addr)
					}
				}})
			say("error: " + res[0].Detail + ": " + lastLine(res[0].Output))
		}()
	}
	deadline := time.After(time.Minute)
	for i := range vnodes {
		if ready[i] == nil {
			continue
		}
		select {
		case a := <-ready[i]:
			if e, ok := strings.CutPrefix(a, "error: "); ok {
				vnodes[i].Error = "starting the probe over ssh: " + e
			} else {
				vnodes[i].Addr = a
			}
		case <-deadline:
			vnodes[i].Error = "the probe did not start within a minute"
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	o := verify.Options{Duration: d, Progress: progress}
	if mpi {
		hosts := make([]string, len(up))
		for i, n := range up {
			hosts[i] = n.Name
		}
		o.MPI = func(ctx context.Context) *verify.MPIResult {
			ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
			defer cancel()
			return verify.MPI(ctx, runCombined, "/home", hosts, os.Geteuid() == 0)
		}
	}
	rep := verify.Run(ctx, vnodes, token, bar, o)
	// The probes stop at once; ssh clients end with ctx.
	for _, n := range vnodes {
		if n.Error == "" {
			if pc, err := verify.DialProbe(ctx, n.Addr, token); err == nil {
				pc.Quit()
				pc.Close()
			}
		}
	}
	return rep, nil
}

// runCombined is verify.Runner on this machine. Open MPI 5's launcher
// (prterun) wants root's consent in its environment besides
// --allow-run-as-root; other programs ignore it.
func runCombined(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
	// Started by a service or a guest agent, there may be no HOME, which
	// Open MPI's launcher wants for its session folder and ssh.
	if os.Getenv("HOME") == "" {
		if u, err := user.Current(); err == nil {
			cmd.Env = append(cmd.Env, "HOME="+u.HomeDir)
		}
	}
	return cmd.CombinedOutput()
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	return s[strings.LastIndex(s, "\n")+1:]
}

// saveReport keeps rep as the head's last verify report.
func saveReport(stateDir string, rep *verify.Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if _, err := os.Stat(stateDir); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(stateDir, contract.VerifyFile), append(b, '\n'), 0o644)
}
