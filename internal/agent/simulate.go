package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// SimSubnet holds the made-up addresses of simulated nodes. They are not
// on any network: a simulated node only talks HTTP to the head from this
// machine. A head serving a simulation has this as its cluster subnet (the
// registry accepts only addresses it can name), with SimHead its address.
var (
	SimSubnet = netip.MustParsePrefix("10.200.0.0/16")
	SimHead   = netip.MustParseAddr("10.200.0.1")
)

// SimResult counts what a simulation's requests did.
type SimResult struct {
	Agents          int
	Registered      int // agents that registered at least once
	RegisterErrors  int
	Heartbeats      int
	HeartbeatErrors int
	Left            int
	LeaveErrors     int
	// Names are the names the head gave, per agent ("" if it never
	// registered).
	Names []string
	// Elapsed is the wall time from start to all agents registered.
	Elapsed time.Duration
	// FirstError is the first error any request met, for the report.
	FirstError string
}

// SimNode returns the MAC and address of simulated node i (0 to 65532): a
// locally administered unicast MAC (02:...), which no real card has, and
// the address of host number i+2 in SimSubnet, after the head's .1, so
// that every simulated node has a name of its own.
func SimNode(i int) (mac, ip string) {
	hw := net.HardwareAddr{0x02, 0xcd, 0x5e, byte(i >> 16), byte(i >> 8), byte(i)}
	base := SimSubnet.Addr().As4()
	h := i + 2
	addr := netip.AddrFrom4([4]byte{base[0], base[1], byte(h >> 8), byte(h)})
	return hw.String(), addr.String()
}

// Simulate runs n fake agents against the head at headURL until ctx is
// done: each registers (with an SSH host key, so the head signs too),
// heartbeats every interval with made-up stats, registers again if the
// head forgets it, and leaves at the end. It returns when every agent has
// left. Errors are counted, not returned; the error is for bad arguments.
func Simulate(ctx context.Context, headURL, token string, n int, interval time.Duration) (SimResult, error) {
	res := SimResult{Agents: n}
	if n <= 0 || n > 65533 {
		return res, fmt.Errorf("simulate: %d agents is out of range (1 to 65533, the hosts of %v after its head)", n, SimSubnet)
	}
	if interval <= 0 {
		return res, errors.New("simulate: the heartbeat interval must be positive")
	}
	if _, err := headHostPort(headURL); err != nil {
		return res, err
	}
	// One transport keeps a connection per agent alive, like n machines
	// would, instead of opening one per request.
	hc := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: n, MaxIdleConnsPerHost: n, IdleConnTimeout: time.Minute},
	}
	defer hc.CloseIdleConnections()
	c := registry.NewClient(headURL, token, hc)
	res.Names = make([]string, n)

	var mu sync.Mutex
	count := func(f func()) { mu.Lock(); f(); mu.Unlock() }
	fail := func(err error, counter *int) {
		count(func() {
			*counter++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
		})
	}
	start := time.Now()
	var registered sync.WaitGroup
	registered.Add(n)
	elapsed := make(chan time.Duration, 1)
	go func() {
		registered.Wait()
		elapsed <- time.Since(start)
	}()

	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mac, ip := SimNode(i)
			pub, _, _ := ed25519.GenerateKey(nil)
			sshPub, _ := ssh.NewPublicKey(pub)
			req := registry.RegisterRequest{MAC: mac, IP: ip, Cores: 1 + i%8, MemTotalKiB: 8 << 20,
				SSHHostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))}
			reg := func() bool {
				for ctx.Err() == nil {
					resp, err := c.Register(ctx, req)
					if err == nil {
						count(func() { res.Names[i] = resp.Name })
						return true
					}
					if ctx.Err() != nil {
						break
					}
					fail(err, &res.RegisterErrors)
					sleep(ctx, interval)
				}
				return false
			}
			ok := reg()
			registered.Done()
			if !ok {
				return
			}
			count(func() { res.Registered++ })
			// Spread the heartbeats over the interval, as real nodes that
			// booted at different moments would.
			sleep(ctx, rand.N(interval))
			t := time.NewTicker(interval)
			defer t.Stop()
			for ctx.Err() == nil {
				s := registry.Stats{Load1: rand.Float64() * 4, MemUsedKiB: rand.Uint64N(8 << 20), UptimeSec: int64(time.Since(start).Seconds()) + 1}
				_, err := c.Heartbeat(ctx, mac, s)
				switch {
				case err == nil:
					count(func() { res.Heartbeats++ })
				case ctx.Err() != nil:
				case errors.Is(err, registry.ErrUnknownNode):
					fail(err, &res.HeartbeatErrors)
					reg()
				default:
					fail(err, &res.HeartbeatErrors)
				}
				select {
				case <-ctx.Done():
				case <-t.C:
				}
			}
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaveTimeout)
			defer cancel()
			if err := c.Leave(lctx, mac); err != nil {
				fail(err, &res.LeaveErrors)
			} else {
				count(func() { res.Left++ })
			}
		})
	}
	wg.Wait()
	res.Elapsed = <-elapsed
	return res, nil
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
