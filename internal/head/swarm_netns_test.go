package head

// TestSwarmRedirect starts a whole head with the RAM root in a network
// namespace (as TestHeadAccessAudit does) and checks its choice of peer for
// layer requests over real HTTP: nodes and peers are addresses on the
// namespace's loopback, two peers serve their copies with swarm.Server.
// Bounded uploads, no redirect to a peer that is down or was caught serving
// a bad copy, node1 itself when no peer is free, and the byte counts.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/swarm"
)

// The swarm test's addresses on the head namespace's loopback: two peers
// and the nodes that boot after them.
var (
	swarmPeers = []string{"10.99.0.50", "10.99.0.51"}
	swarmNodes = []string{"10.99.0.60", "10.99.0.61", "10.99.0.62", "10.99.0.63", "10.99.0.64", "10.99.0.65"}
)

func TestSwarmRedirect(t *testing.T) {
	if os.Getenv(roomChildEnv) == "swarm" {
		swarmChild(t)
		return
	}
	needTools(t, "udhcpc")
	ctx, cancel := context.WithTimeout(context.Background(), 10*guard)
	defer cancel()
	_, head, _ := lanRoom(t, ctx, "wl", "wh", "wc")
	for _, a := range append(append([]string{}, swarmPeers...), swarmNodes...) {
		must(t, head.AddAddr(ctx, "lo", netip.MustParsePrefix(a+"/32")))
	}
	runRoomChild(t, ctx, head, "TestSwarmRedirect", "swarm")
}

func sum256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func swarmChild(t *testing.T) {
	base := []byte(strings.Repeat("the base layer\n", 1000))
	h, _, _, _ := startRoomHead(t, func(o *Options) {
		must(t, os.WriteFile(filepath.Join(o.BootDir, contract.BaseLayer), base, 0o644))
		o.Root = contract.RootRAM
		o.DHCP = dhcp.ModeServer
		o.Logger = slog.New(slog.NewTextHandler(&testLog{t: t}, nil))
		// Its nodes register from node1's process (see TestHeadAccessAudit).
		o.SimulatedNodes = true
	})
	headURL := "http://" + h.Addr().String()
	if c := h.nodeCmdline(); !c.Swarm || c.LayerSums[contract.BaseLayer] != sum256(base) {
		t.Fatalf("the RAM root's command line has no swarm or not the base layer's sum: %s", c.String())
	}

	// client returns an HTTP client whose requests come from addr; follow
	// says whether it follows redirects.
	client := func(addr string, follow bool) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}}
		c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
		if !follow {
			c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		}
		return c
	}
	report := func(from, result string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, headURL+contract.SwarmReportPath,
			strings.NewReader(url.Values{"layer": {contract.BaseLayer}, "result": {result}}.Encode()))
		must(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+h.token)
		resp, err := client(from, false).Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("report %s from %s: %d", result, from, resp.StatusCode)
		}
	}
	api := func(path string, body any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, err := http.NewRequest(http.MethodPost, headURL+path, bytes.NewReader(b))
		must(t, err)
		req.Header.Set("Authorization", "Bearer "+h.token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
			t.Fatalf("POST %s: %d", path, resp.StatusCode)
		}
	}
	// get asks node1 for the base layer from addr and returns the peer it
	// was sent to ("node1" when node1 served it, whole).
	get := func(from string, query string) string {
		t.Helper()
		resp, err := client(from, false).Get(headURL + contract.NetbootPath + contract.BaseLayer + query)
		must(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		switch resp.StatusCode {
		case http.StatusFound:
			loc, err := url.Parse(resp.Header.Get("Location"))
			must(t, err)
			if loc.Port() != fmt.Sprint(contract.SwarmPort) || loc.Path != "/"+contract.BaseLayer {
				t.Fatalf("redirect to %s, want a peer's port %d and the layer's name", loc, contract.SwarmPort)
			}
			return loc.Hostname()
		case http.StatusOK:
			if !bytes.Equal(body, base) {
				t.Fatalf("node1 served %d bytes, not the layer", len(body))
			}
			return "node1"
		}
		t.Fatalf("GET the base layer from %s: %d %s", from, resp.StatusCode, body)
		return ""
	}
	// ask asks node1 for the base layer from addr, in the background:
	// the answer ("302 <peer>") comes on the channel.
	ask := func(from string) <-chan string {
		answer := make(chan string, 1)
		go func() {
			resp, err := client(from, false).Get(headURL + contract.NetbootPath + contract.BaseLayer)
			if err != nil {
				answer <- err.Error()
				return
			}
			resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			answer <- fmt.Sprintf("%d %s", resp.StatusCode, loc.Hostname())
		}()
		return answer
	}
	// queued waits until node1's queue holds want requests.
	queued := func(want int) {
		t.Helper()
		for range 1500 {
			if h.swarm.broker.Stats().Queued == want {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("node1's queue never held %d requests: %+v", want, h.swarm.broker.Stats())
	}
	expect := func(from, query, want string) {
		t.Helper()
		if got := get(from, query); got != want {
			t.Errorf("%s's request%s went to %s, want %s", from, query, got, want)
		}
	}

	// Before any peer holds the layer, node1 serves it.
	expect(swarmNodes[0], "", "node1")

	// The peers verified the layer (reported), then registered, and serve
	// their copies.
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, contract.BaseLayer), base, 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, p := range swarmPeers {
		report(p, contract.SwarmOK)
		api(registry.PathRegister, registry.RegisterRequest{MAC: fmt.Sprintf("02:cd:00:00:01:%02x", i), IP: p, Cores: 1})
		go swarm.Serve(ctx, net.JoinHostPort(p, fmt.Sprint(contract.SwarmPort)), &swarm.Server{Dir: dir, Layers: []string{contract.BaseLayer}})
	}

	// A node that follows the redirect gets the peer's copy, byte for byte.
	resp, err := client(swarmNodes[0], true).Get(headURL + contract.NetbootPath + contract.BaseLayer)
	must(t, err)
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, base) || resp.Request.URL.Port() != fmt.Sprint(contract.SwarmPort) {
		t.Fatalf("following node1's redirect: %d, %d bytes from %s", resp.StatusCode, len(got), resp.Request.URL)
	}
	// nodes[0] is on .50; two uploads per peer.
	expect(swarmNodes[1], "", swarmPeers[1])
	expect(swarmNodes[2], "", swarmPeers[0])
	expect(swarmNodes[3], "", swarmPeers[1])
	// Both peers full: the peers hold the layer, so node1 leaves it to
	// them and nodes[4]'s request waits in its queue.
	waiting := ask(swarmNodes[4])
	queued(1)
	// The no-redirect form is node1's, always, at once.
	expect(swarmNodes[5], "?"+contract.SwarmDirectQuery, "node1")

	// nodes[2] caught .50 serving a bad one: .50 is no longer offered;
	// nodes[0] got its copy (ok), which frees .50's slot, but .51 is
	// full: nodes[4] waits on.
	report(swarmNodes[2], contract.SwarmBad)
	report(swarmNodes[0], contract.SwarmOK)
	queued(1)
	// nodes[1] is done with .51: its slot goes to the waiting nodes[4].
	report(swarmNodes[1], contract.SwarmOK)
	if got, want := <-waiting, "302 "+swarmPeers[1]; got != want {
		t.Errorf("nodes[4]'s waiting request: %s, want %s", got, want)
	}
	// .51 leaves (it is down to the registry); nodes[0], [1] and [4]
	// verified the layer but have not registered: nodes[5] waits for
	// them, and goes to nodes[0] once it registers.
	report(swarmNodes[4], contract.SwarmOK)
	api(registry.PathLeave, registry.LeaveRequest{MAC: "02:cd:00:00:01:01"})
	waiting = ask(swarmNodes[5])
	queued(1)
	api(registry.PathRegister, registry.RegisterRequest{MAC: "02:cd:00:00:02:00", IP: swarmNodes[0], Cores: 1})
	if got, want := <-waiting, "302 "+swarmNodes[0]; got != want {
		t.Errorf("nodes[5]'s waiting request: %s, want %s", got, want)
	}

	st := h.swarm.broker.Stats()
	size := int64(len(base))
	// node1 served: nodes[0] at first, nodes[5] directly.
	if st.Node1Bytes != 2*size || st.Node1Layers != 2 || st.Waits != 2 || st.Node1Uploads != 0 {
		t.Errorf("node1 sent %d bytes in %d layers after %d waits, %d uploads running; want %d in 2, 2 waits, none running",
			st.Node1Bytes, st.Node1Layers, st.Waits, st.Node1Uploads, 2*size)
	}
	if st.PeerBytes != 3*size || st.FromPeers[contract.BaseLayer] != 3 || st.BadReports != 1 {
		t.Errorf("peers: %d bytes, %v copies, %d bad; want %d, 3, 1", st.PeerBytes, st.FromPeers, st.BadReports, 3*size)
	}
	// The counters on /metrics and the swarm API.
	resp, err = http.Get(headURL + "/metrics")
	must(t, err)
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf("clusterdebian_swarm_layer_bytes_total{from=\"node1\"} %d\n", 2*size),
		fmt.Sprintf("clusterdebian_swarm_layer_bytes_total{from=\"peers\"} %d\n", 3*size),
		"clusterdebian_swarm_refused_total{why=\"bad\"} 1\n",
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, metrics)
		}
	}
	resp, err = http.Get(headURL + contract.SwarmPath)
	must(t, err)
	var api1 struct {
		On bool `json:"on"`
		swarm.Stats
	}
	must(t, json.NewDecoder(resp.Body).Decode(&api1))
	resp.Body.Close()
	if !api1.On || api1.ImageBytes != size || api1.PeerBytes != 3*size {
		t.Errorf("%s: %+v", contract.SwarmPath, api1)
	}
}
