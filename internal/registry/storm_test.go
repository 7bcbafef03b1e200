package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPruneDuringRegistrationStorm: agents register and heartbeat (and
// register again when told 404, as the agent does) while `prune` runs over
// and over, each time after a sweep that sees every node as silent, so
// that prunes hit nodes in the middle of their storm. Throughout, the node
// list has no MAC, address or name twice and every name is its address's;
// every prune answer lists only down nodes, never the head, and OnPrune
// hears each one. Afterwards every agent is registered once and up, and
// the saved file says the same. Run with -race.
func TestPruneDuringRegistrationStorm(t *testing.T) {
	const agents, rounds, prunes = 30, 20, 25
	var onPruneCalls atomic.Int64
	e := newAPIEnv(t, OnPrune(func([]Node) { onPruneCalls.Add(1) }))
	head := req("52:54:00:00:00:01", "10.99.0.1")
	head.Role = RoleHead
	if _, err := e.reg.Register(head); err != nil {
		t.Fatal(err)
	}
	gen0 := e.reg.Generation()

	// check reports what is inconsistent in a node list.
	check := func(ns []Node) error {
		macs, ips, nms := map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, n := range ns {
			if macs[n.MAC] || ips[n.IP] || nms[n.Name] {
				return fmt.Errorf("%s (%s, %s) listed twice", n.Name, n.MAC, n.IP)
			}
			macs[n.MAC], ips[n.IP], nms[n.Name] = true, true, true
			ip, name, err := e.reg.parseIP(n.IP)
			if err != nil || name != n.Name {
				return fmt.Errorf("%s at %v: the address names %q (%v)", n.Name, ip, name, err)
			}
			if n.State != StateUp && n.State != StateDown {
				return fmt.Errorf("%s in state %q", n.Name, n.State)
			}
		}
		return nil
	}

	var (
		wg                      sync.WaitGroup
		stop                    = make(chan struct{})
		mu                      sync.Mutex
		errs                    []string
		registers, heartbeats   atomic.Int64
		notFound, prunedTotal   atomic.Int64
		pruneAnswers, listReads atomic.Int64
	)
	fail := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, a...))
		}
	}
	// post is apiEnv.post for other goroutines: a failed request is an
	// error to report, not a t.Fatal off the test's goroutine.
	post := func(path string, body any) (int, []byte) {
		data, _ := json.Marshal(body)
		r, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(data))
		r.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := e.srv.Client().Do(r)
		if err != nil {
			return 0, []byte(err.Error())
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	mac := func(i int) string { return fmt.Sprintf("52:54:00:00:01:%02x", i) }
	ip := func(i int) string { return fmt.Sprintf("10.99.0.%d", 10+i) }
	// beat heartbeats agent i, registering it again if the head forgot it.
	beat := func(i int) {
		status, out := post(PathHeartbeat, HeartbeatRequest{MAC: mac(i), Stats: Stats{Load1: 1}})
		heartbeats.Add(1)
		switch status {
		case http.StatusNoContent:
			return
		case http.StatusNotFound:
			notFound.Add(1)
		default:
			fail("heartbeat of agent %d: %d %s", i, status, out)
			return
		}
		if status, out := post(PathRegister, registerBody(t, mac(i), ip(i), nil)); status != http.StatusOK {
			fail("register again of agent %d: %d %s", i, status, out)
		}
		registers.Add(1)
	}

	var joined sync.WaitGroup // the prunes start once every agent joined
	joined.Add(agents)
	for i := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, out := post(PathRegister, registerBody(t, mac(i), ip(i), nil)); status != http.StatusOK {
				fail("register of agent %d: %d %s", i, status, out)
			}
			registers.Add(1)
			joined.Done()
			for range rounds {
				beat(i)
			}
		}()
	}
	wg.Add(1)
	go func() { // the admin: sweep as if an hour passed, then prune
		defer wg.Done()
		joined.Wait()
		for range prunes {
			e.reg.Sweep(time.Now().Add(time.Hour))
			status, out := post(PathPrune, nil)
			pruneAnswers.Add(1)
			var gone []Node
			if status != http.StatusOK || json.Unmarshal(out, &gone) != nil {
				fail("prune: %d %s", status, out)
				continue
			}
			prunedTotal.Add(int64(len(gone)))
			if err := check(gone); err != nil {
				fail("prune answer: %v", err)
			}
			for _, n := range gone {
				if n.State != StateDown || n.Role == RoleHead {
					fail("prune removed %s (%s, %s)", n.Name, n.Role, n.State)
				}
			}
		}
	}()
	var readers sync.WaitGroup
	readers.Add(1)
	go func() { // someone running `clusterdebian status` meanwhile
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := check(e.reg.Nodes()); err != nil {
				fail("node list during the storm: %v", err)
			}
			listReads.Add(1)
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()

	// The storm is over: every agent heartbeats once more, as it would.
	for i := range agents {
		beat(i)
	}
	if err := e.reg.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, s := range errs {
		t.Error(s)
	}
	ns := e.reg.Nodes()
	if err := check(ns); err != nil {
		t.Errorf("node list after the storm: %v", err)
	}
	byMAC := map[string]Node{}
	for _, n := range ns {
		byMAC[n.MAC] = n
	}
	if len(ns) != agents+1 || byMAC[head.MAC].Role != RoleHead {
		t.Errorf("after the storm %d nodes are listed, want the head and %d agents", len(ns), agents)
	}
	for i := range agents {
		if n, ok := byMAC[mac(i)]; !ok || n.IP != ip(i) || n.State != StateUp {
			t.Errorf("agent %d after the storm: %+v (listed %v)", i, n, ok)
		}
	}
	if got := onPruneCalls.Load(); got != pruneAnswers.Load() {
		t.Errorf("OnPrune called %d times for %d prunes", got, pruneAnswers.Load())
	}
	if e.reg.Generation() <= gen0 {
		t.Errorf("generation did not move: %d", e.reg.Generation())
	}
	// What the head would find on a restart is what it lists.
	again, err := Open(e.reg.path, testNaming, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	saved := again.Nodes()
	if len(saved) != len(ns) {
		t.Fatalf("the saved file holds %d nodes, the registry %d", len(saved), len(ns))
	}
	for i := range ns {
		if saved[i].MAC != ns[i].MAC || saved[i].IP != ns[i].IP || saved[i].Name != ns[i].Name || saved[i].State != ns[i].State {
			t.Errorf("saved %+v, listed %+v", saved[i], ns[i])
		}
	}
	if prunedTotal.Load() == 0 || notFound.Load() == 0 {
		t.Errorf("the prunes hit nothing (%d pruned, %d heartbeats told 404): the test tested no race", prunedTotal.Load(), notFound.Load())
	}
	t.Logf("%d agents: %d registrations, %d heartbeats (%d told 404 after a prune), %d prunes removing %d nodes, %d list reads; %d inconsistencies",
		agents, registers.Load(), heartbeats.Load(), notFound.Load(), pruneAnswers.Load(), prunedTotal.Load(), listReads.Load(), len(errs))
}
