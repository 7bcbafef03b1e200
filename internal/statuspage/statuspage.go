// Package statuspage is the head's read-only web view of the cluster: an
// HTML page at /status that polls the head's JSON (/api/v1/nodes,
// /api/v1/boot) and draws the node table, and Prometheus text metrics at
// /metrics.
//
// The page is one file with its CSS and JavaScript inline and no outside
// references: the cluster network usually has no Internet, and a page that
// waits for a CDN shows nothing.
package statuspage

import (
	_ "embed"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// Paths the head mounts.
const (
	PathStatus  = "/status"
	PathMetrics = "/metrics"
)

//go:embed page.html
var page []byte

// Page serves the status page, to GET and HEAD.
func Page() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !readOnly(w, r) {
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		// The page needs nothing from elsewhere; say so, so a browser
		// refuses anything an injected node name might try to load.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
		w.Header().Set("Content-Length", strconv.Itoa(len(page)))
		if r.Method == http.MethodHead {
			return
		}
		w.Write(page)
	})
}

// Metrics serves the nodes' figures in the Prometheus text format, to GET
// and HEAD. nodes is called per request; now is the clock (time.Now if nil).
func Metrics(nodes func() []registry.Node, now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !readOnly(w, r) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodHead {
			return
		}
		WriteMetrics(w, nodes(), now())
	})
}

// readOnly answers 405 to anything but GET and HEAD.
func readOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return false
	}
	return true
}

// metric is one per-node series.
type metric struct {
	name, help string
	value      func(n registry.Node, now time.Time) float64
}

var nodeMetrics = []metric{
	{"clusterdebian_node_up", "1 if the node is up (heartbeating, its sshd answering), 0 if it is joining or down.", func(n registry.Node, _ time.Time) float64 {
		if n.State == registry.StateUp {
			return 1
		}
		return 0
	}},
	{"clusterdebian_node_cores", "CPU cores of the node.", func(n registry.Node, _ time.Time) float64 { return float64(n.Cores) }},
	{"clusterdebian_node_load1", "1-minute load average of the node, as of its last heartbeat.", func(n registry.Node, _ time.Time) float64 { return n.Load1 }},
	{"clusterdebian_node_memory_used_bytes", "Memory in use on the node, as of its last heartbeat.", func(n registry.Node, _ time.Time) float64 { return float64(n.MemUsedKiB) * 1024 }},
	{"clusterdebian_node_memory_total_bytes", "Memory of the node.", func(n registry.Node, _ time.Time) float64 { return float64(n.MemTotalKiB) * 1024 }},
	{"clusterdebian_node_uptime_seconds", "Uptime of the node, as of its last heartbeat.", func(n registry.Node, _ time.Time) float64 { return float64(n.UptimeSec) }},
	{"clusterdebian_node_last_seen_seconds", "Seconds since the head last heard from the node.", func(n registry.Node, now time.Time) float64 {
		if n.LastSeen.IsZero() {
			return 0
		}
		return max(now.Sub(n.LastSeen).Seconds(), 0)
	}},
	{"clusterdebian_node_last_seen_timestamp_seconds", "Unix time the head last heard from the node.", func(n registry.Node, _ time.Time) float64 {
		if n.LastSeen.IsZero() {
			return 0
		}
		return float64(n.LastSeen.UnixMilli()) / 1000
	}},
}

// WriteMetrics writes the metrics of nodes at time now.
func WriteMetrics(w io.Writer, nodes []registry.Node, now time.Time) error {
	var b strings.Builder
	for _, m := range nodeMetrics {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", m.name, m.help, m.name)
		for _, n := range nodes {
			fmt.Fprintf(&b, "%s{node=\"%s\",ip=\"%s\",role=\"%s\"} %s\n", m.name,
				escape(n.Name), escape(n.IP), escape(n.Role), num(m.value(n, now)))
		}
	}
	var up, joining, down, cores int
	var load float64
	for _, n := range nodes {
		switch n.State {
		case registry.StateUp:
			up++
			cores += n.Cores
			load += n.Load1
		case registry.StateJoining:
			joining++
		default:
			down++
		}
	}
	fmt.Fprintf(&b, "# HELP clusterdebian_nodes Registered nodes by state.\n# TYPE clusterdebian_nodes gauge\n")
	fmt.Fprintf(&b, "clusterdebian_nodes{state=\"up\"} %d\nclusterdebian_nodes{state=\"joining\"} %d\nclusterdebian_nodes{state=\"down\"} %d\n", up, joining, down)
	fmt.Fprintf(&b, "# HELP clusterdebian_cores Cores of the nodes that are up.\n# TYPE clusterdebian_cores gauge\n")
	fmt.Fprintf(&b, "clusterdebian_cores %d\n", cores)
	fmt.Fprintf(&b, "# HELP clusterdebian_load1 Sum of the 1-minute loads of the nodes that are up.\n# TYPE clusterdebian_load1 gauge\n")
	fmt.Fprintf(&b, "clusterdebian_load1 %s\n", num(load))
	_, err := io.WriteString(w, b.String())
	return err
}

// escape escapes a label value as the text format wants.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
