package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// PathReport is the head's read-only route for the last report (JSON,
// Report; 404 before the first run).
const PathReport = "/api/v1/verify"

// ReadReport reads a report verify kept (contract.VerifyFile in the head's
// state folder). A missing file is an error that errors.Is
// os.ErrNotExist.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// Handler serves the report at path to GET and HEAD: 404 when there is
// none yet.
func Handler(path string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		r, err := ReadReport(path)
		switch {
		case os.IsNotExist(err):
			http.Error(w, "no verify report yet: run clusterdebian verify on node1", http.StatusNotFound)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		b, err := json.Marshal(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(append(b, '\n'))
	})
}

// WriteMetrics writes r in the Prometheus text format: the verdict, its
// time, the findings, and per pair and node the figures.
func WriteMetrics(w io.Writer, r *Report) error {
	var b strings.Builder
	gauge := func(name, help string) { fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name) }
	pass := 0
	if r.Pass {
		pass = 1
	}
	gauge("clusterdebian_verify_pass", "1 if the last clusterdebian verify passed its bar, 0 if not.")
	fmt.Fprintf(&b, "clusterdebian_verify_pass %d\n", pass)
	gauge("clusterdebian_verify_timestamp_seconds", "Unix time of the last clusterdebian verify.")
	fmt.Fprintf(&b, "clusterdebian_verify_timestamp_seconds %s\n", num(float64(r.Time.UnixMilli())/1000))
	gauge("clusterdebian_verify_findings", "Findings below the bar in the last clusterdebian verify.")
	fmt.Fprintf(&b, "clusterdebian_verify_findings %d\n", len(r.Findings))
	gauge("clusterdebian_verify_pair_bandwidth_mbit", "TCP throughput of a pair of nodes, the slower way, in Mbit/s, in the last verify.")
	for _, l := range r.Links {
		if l.Error == "" {
			fmt.Fprintf(&b, "clusterdebian_verify_pair_bandwidth_mbit{a=\"%s\",b=\"%s\"} %s\n", escape(l.A), escape(l.B), num(l.Mbit()))
		}
	}
	gauge("clusterdebian_verify_pair_rtt_seconds", "Median round trip of a small message between a pair of nodes, in the last verify.")
	for _, l := range r.Links {
		if l.Error == "" {
			fmt.Fprintf(&b, "clusterdebian_verify_pair_rtt_seconds{a=\"%s\",b=\"%s\"} %s\n", escape(l.A), escape(l.B), num(l.RTTMicros/1e6))
		}
	}
	gauge("clusterdebian_verify_clock_offset_seconds", "A node's clock minus node1's, in the last verify.")
	for _, n := range r.Nodes {
		if n.Error == "" {
			fmt.Fprintf(&b, "clusterdebian_verify_clock_offset_seconds{node=\"%s\"} %s\n", escape(n.Name), num(n.ClockOffsetMS/1000))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// escape escapes a label value as the text format wants.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
