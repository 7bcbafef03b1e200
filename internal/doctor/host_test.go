package doctor

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// TestHeartbeatsFromRegistry asks a real registry, behind its real API, as
// HostSystem does: the node the registry's own rule marks down (no
// heartbeat for registry.MissedHeartbeats intervals) is the one doctor
// names; the one that kept beating is not.
func TestHeartbeatsFromRegistry(t *testing.T) {
	naming := contract.Naming{Subnet: netip.MustParsePrefix("10.99.0.0/24"), Head: netip.MustParseAddr("10.99.0.1")}
	reg, err := registry.Open(filepath.Join(t.TempDir(), "nodes.json"), naming, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Flush() })
	wall := now
	var mono time.Duration
	reg.SetClocks(func() time.Time { return wall }, func() time.Duration { return mono })
	for _, ip := range []string{"10.99.0.5", "10.99.0.6"} {
		if _, err := reg.Register(registry.RegisterRequest{MAC: "52:54:00:00:00:0" + ip[len(ip)-1:], IP: ip}); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(registry.NewAPI(reg, "", nil, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	h := hostSystem{api: registry.NewClient(srv.URL, "", nil)}

	// Two intervals without node6: not down yet by the registry's rule.
	for range 2 {
		wall, mono = wall.Add(5*time.Second), mono+5*time.Second
		if err := reg.Heartbeat("52:54:00:00:00:05", registry.Stats{}); err != nil {
			t.Fatal(err)
		}
		reg.Sweep(wall)
	}
	nodes, err := h.Nodes(context.Background())
	if r := checkHeartbeats(nodes, err, time.Now()); r.Status != OK {
		t.Errorf("after two missed heartbeats: %s, want OK (the registry allows %d)", r, registry.MissedHeartbeats)
	}
	// Two more: node6 is down, and doctor names it alone.
	for range 2 {
		wall, mono = wall.Add(5*time.Second), mono+5*time.Second
		if err := reg.Heartbeat("52:54:00:00:00:05", registry.Stats{}); err != nil {
			t.Fatal(err)
		}
		reg.Sweep(wall)
	}
	nodes, err = h.Nodes(context.Background())
	r := checkHeartbeats(nodes, err, time.Now())
	name5, _ := naming.Name(netip.MustParseAddr("10.99.0.5"))
	name6, _ := naming.Name(netip.MustParseAddr("10.99.0.6"))
	if r.Status != Warn || !strings.Contains(r.Detail, name6+" (10.99.0.6") || strings.Contains(r.Detail, name5+" ") {
		t.Errorf("after four missed heartbeats: %s, want a WARN naming node6 alone", r)
	}
	// No head: the check fails and says where it asked.
	srv.Close()
	nodes, err = h.Nodes(context.Background())
	if r := checkHeartbeats(nodes, err, time.Now()); r.Status != Fail || !strings.Contains(r.Detail, srv.URL) {
		t.Errorf("without a head: %s", r)
	}
}
