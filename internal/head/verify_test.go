package head

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/verify"
)

// TestVerifyReport checks that the report clusterdebian verify keeps in the
// state folder is served at /api/v1/verify and summed up in /metrics, and
// that before the first run there is a 404 and no verify metrics.
func TestVerifyReport(t *testing.T) {
	state := t.TempDir()
	reg, err := registry.Open(filepath.Join(state, contract.RegistryFile), testNaming, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Flush() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := &Head{opts: Options{StateDir: state}, cluster: &cluster{reg: reg, api: registry.NewAPI(reg, "", nil, log)}}
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.routes().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if c, _ := get(verify.PathReport); c != http.StatusNotFound {
		t.Errorf("GET %s before any run: %d, want 404", verify.PathReport, c)
	}
	if _, m := get("/metrics"); strings.Contains(m, "clusterdebian_verify") {
		t.Errorf("/metrics before any run has verify's figures:\n%s", m)
	}
	rep := verify.Report{Nodes: []verify.NodeResult{{Facts: verify.Facts{Name: "node1"}}, {Facts: verify.Facts{Name: "node2"}}},
		Links: []verify.Link{{A: "node1", B: "node2", RTTMicros: 500, MbitAB: 300, MbitBA: 250}}, Pass: true}
	b, _ := json.Marshal(rep)
	if err := os.WriteFile(filepath.Join(state, contract.VerifyFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if c, body := get(verify.PathReport); c != http.StatusOK || !strings.Contains(body, `"mbit_ba":250`) {
		t.Errorf("GET %s: %d %s", verify.PathReport, c, body)
	}
	_, m := get("/metrics")
	for _, want := range []string{"clusterdebian_verify_pass 1\n", `clusterdebian_verify_pair_bandwidth_mbit{a="node1",b="node2"} 250`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, m)
		}
	}
}
