package verify

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestKeptReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "verify.json")
	h := Handler(path)
	get := func(method string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, PathReport, nil))
		return w
	}
	if w := get(http.MethodGet); w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "clusterdebian verify") {
		t.Errorf("before any run: %d %q", w.Code, w.Body)
	}
	r := cluster(3)
	slowDown(r, "node2", "", 19)
	r.Time = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	Analyze(r)
	b, _ := json.Marshal(r)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	w := get(http.MethodGet)
	var back Report
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &back) != nil || len(back.Links) != 3 || back.Pass || len(back.Findings) != 1 {
		t.Errorf("after a run: %d %s", w.Code, w.Body)
	}
	if w := get(http.MethodPost); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", w.Code)
	}

	var m strings.Builder
	if err := WriteMetrics(&m, &back); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"clusterdebian_verify_pass 0\n", "clusterdebian_verify_findings 1\n",
		"clusterdebian_verify_timestamp_seconds " + strconv.FormatFloat(float64(r.Time.Unix()), 'g', -1, 64) + "\n",
		`clusterdebian_verify_pair_bandwidth_mbit{a="node1",b="node2"} 19` + "\n",
		`clusterdebian_verify_pair_bandwidth_mbit{a="node1",b="node3"} 400` + "\n",
		`clusterdebian_verify_pair_rtt_seconds{a="node1",b="node2"} 0.0003` + "\n",
		`clusterdebian_verify_clock_offset_seconds{node="node3"} 0` + "\n"} {
		if !strings.Contains(m.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, m.String())
		}
	}
}
