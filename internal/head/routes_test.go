package head

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// testNaming is the default cluster network: 10.99.0.0/24, node1 at .1.
var testNaming = contract.Naming{Subnet: netip.MustParsePrefix("10.99.0.0/24"), Head: netip.MustParseAddr("10.99.0.1")}

// TestRoutes checks that the status page (at "/" too), the metrics and the
// node API are served beside the boot handler, and that everything else
// still reaches it.
func TestRoutes(t *testing.T) {
	reg, err := registry.Open(filepath.Join(t.TempDir(), contract.RegistryFile), testNaming, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Flush() })
	if _, err := reg.Register(registry.RegisterRequest{MAC: "52:54:00:00:00:02", IP: "10.99.0.2", Cores: 2}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	boot := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "boot "+r.URL.Path) })
	h := &Head{handler: boot, cluster: &cluster{reg: reg, api: registry.NewAPI(reg, "", nil, log)}}
	srv := httptest.NewServer(h.routes())
	defer srv.Close()
	for path, want := range map[string]string{
		"/status":             `<table id="nodes">`,
		"/status/":            `<table id="nodes">`,
		"/metrics":            `clusterdebian_node_up{node="node2",ip="10.99.0.2",role="node"} 1`,
		"/api/v1/nodes":       `"name": "node2"`,
		"/":                   `<table id="nodes">`, // http://node1/ in a browser
		"//":                  "boot //",
		"/index.html":         "boot /index.html",
		"/boot/x.ipxe":        "boot /boot/x.ipxe",
		"/statusx":            "boot /statusx",
		"/api/v1/boot":        "boot /api/v1/boot",
		"/status/other":       "boot /status/other",
		"/metrics/":           "boot /metrics/",
		"/api/v1/nodesx":      "boot /api/v1/nodesx",
		"/netboot/vmlinuz":    "boot /netboot/vmlinuz",
		"/api/v1/nodes/prune": "", // POST only; a GET is refused, not booted
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want == "" {
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("GET %s: %d, want 405", path, resp.StatusCode)
			}
			continue
		}
		if !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d %.200q, want %q", path, resp.StatusCode, body, want)
		}
	}
}
