package statuspage

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

func get(t *testing.T, h http.Handler, method, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestPage(t *testing.T) {
	resp, body := get(t, Page(), http.MethodGet, PathStatus)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`<table id="nodes">`, `<tbody id="rows">`, "<th>Name</th>", "<th>IP</th>", "<th>State</th>",
		"<th>Cores</th>", "<th>Load</th>", "<th>Memory</th>", "<th>Uptime</th>", "<th>Last seen</th>", "<th>Boot stage</th>",
		`"/api/v1/nodes"`, `"/api/v1/boot"`, "setInterval(refresh, every)", "const every = 2000",
		// The swarm's counters (internal/head, contract.SwarmPath).
		`getJSON("/api/v1/swarm")`, `<p id="swarm">`, "sw.node1_bytes", "sw.peer_bytes",
		// "last seen" on the head's clock (test/e2e TestStatusPage runs it).
		`r.headers.get("Date")`,
		// Slurm's column and queue (test/e2e TestStatusPageSlurm runs it).
		"<th>Slurm</th>", `"/api/v1/slurm"`, `<table id="jobs">`, `<tbody id="jobrows">`, "<th>Job</th>", "<th>User</th>",
		"<th>Name</th>", "<th>Nodes</th>", "<th>Time</th>",
		// The last verify's pair matrix (internal/verify's report).
		`"/api/v1/verify"`, `<table id="matrix">`, `<ul id="findings">`, "setInterval(refreshVerify"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Nothing from elsewhere: no absolute URLs, no protocol-relative ones,
	// no external scripts or style sheets.
	for _, bad := range []string{"http://", "https://", `src="//`, `href="//`, "<script src", "<link"} {
		if strings.Contains(strings.ToLower(body), bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	if resp, body := get(t, Page(), http.MethodHead, PathStatus); resp.StatusCode != 200 || body != "" {
		t.Errorf("HEAD: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, _ := get(t, Page(), http.MethodPost, PathStatus); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

// sample is one parsed metric line.
type sample struct {
	name   string
	labels string
	value  float64
}

var lineRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$`)

// parseMetrics checks the text format line by line: every sample follows
// a TYPE line of its own metric, and parses.
func parseMetrics(t *testing.T, text string) map[string]sample {
	t.Helper()
	out := map[string]sample{}
	typed := map[string]bool{}
	if !strings.HasSuffix(text, "\n") {
		t.Error("metrics do not end with a newline")
	}
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if f, ok := strings.CutPrefix(l, "# TYPE "); ok {
			p := strings.Fields(f)
			if len(p) != 2 || p[1] != "gauge" {
				t.Errorf("bad TYPE line %q", l)
				continue
			}
			typed[p[0]] = true
			continue
		}
		if strings.HasPrefix(l, "# HELP ") {
			continue
		}
		m := lineRE.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("bad metric line %q", l)
			continue
		}
		if !typed[m[1]] {
			t.Errorf("%s has no TYPE line before it", m[1])
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Errorf("bad value in %q", l)
		}
		out[m[1]+m[2]] = sample{m[1], m[2], v}
	}
	return out
}

func TestMetrics(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	nodes := []registry.Node{
		{Name: "node1", IP: "10.99.0.1", Role: registry.RoleHead, State: registry.StateUp, Cores: 4, Load1: 0.5,
			MemTotalKiB: 8 << 20, MemUsedKiB: 1 << 20, UptimeSec: 3600, LastSeen: now.Add(-2 * time.Second)},
		{Name: "node2", IP: "10.99.0.2", Role: registry.RoleNode, State: registry.StateUp, Cores: 2, Load1: 1.25,
			MemTotalKiB: 4 << 20, MemUsedKiB: 512 << 10, UptimeSec: 60, LastSeen: now.Add(-3 * time.Second)},
		{Name: "node3", IP: "10.99.0.3", Role: registry.RoleNode, State: registry.StateDown, Cores: 8,
			LastSeen: now.Add(-90 * time.Second)},
		{Name: "node4", IP: "10.99.0.4", Role: registry.RoleNode, State: registry.StateJoining, Cores: 16,
			LastSeen: now.Add(-time.Second)},
	}
	h := Metrics(func() []registry.Node { return nodes }, func() time.Time { return now })
	resp, body := get(t, h, http.MethodGet, PathMetrics)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ms := parseMetrics(t, body)
	node2 := `{node="node2",ip="10.99.0.2",role="node"}`
	want := map[string]float64{
		"clusterdebian_node_up" + node2:                                                 1,
		"clusterdebian_node_cores" + node2:                                              2,
		"clusterdebian_node_load1" + node2:                                              1.25,
		"clusterdebian_node_memory_used_bytes" + node2:                                  512 << 20,
		"clusterdebian_node_memory_total_bytes" + node2:                                 4 << 30,
		"clusterdebian_node_uptime_seconds" + node2:                                     60,
		"clusterdebian_node_last_seen_seconds" + node2:                                  3,
		"clusterdebian_node_last_seen_timestamp_seconds" + node2:                        float64(now.Unix() - 3),
		`clusterdebian_node_up{node="node3",ip="10.99.0.3",role="node"}`:                0,
		`clusterdebian_node_last_seen_seconds{node="node3",ip="10.99.0.3",role="node"}`: 90,
		`clusterdebian_node_up{node="node1",ip="10.99.0.1",role="head"}`:                1,
		`clusterdebian_nodes{state="up"}`:                                               2,
		`clusterdebian_node_up{node="node4",ip="10.99.0.4",role="node"}`:                0,
		`clusterdebian_nodes{state="joining"}`:                                          1,
		`clusterdebian_nodes{state="down"}`:                                             1,
		"clusterdebian_cores":                                                           6,
		"clusterdebian_load1":                                                           1.75,
	}
	for k, v := range want {
		got, ok := ms[k]
		if !ok {
			t.Errorf("no %s", k)
		} else if got.value != v {
			t.Errorf("%s = %v, want %v", k, got.value, v)
		}
	}
	if n := len(ms); n != len(nodeMetrics)*len(nodes)+5 {
		t.Errorf("%d samples, want %d", n, len(nodeMetrics)*len(nodes)+5)
	}
}

func TestEscape(t *testing.T) {
	if got := escape("a\"b\\c\nd"); got != `a\"b\\c\nd` {
		t.Errorf("escape = %s", got)
	}
}
