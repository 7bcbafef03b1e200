package head

import (
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

func TestMarkRegistered(t *testing.T) {
	h := &Head{opts: Options{Root: contract.RootShared}, tracker: bootstage.NewTracker()}
	marked := map[string]time.Time{}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nodes := []registry.Node{
		{Name: "node1", MAC: "52:54:00:00:00:01", IP: "10.99.0.1", Role: registry.RoleHead, Registered: at},
		{Name: "node7", MAC: "52:54:00:00:00:07", IP: "10.99.0.7", Role: registry.RoleNode, Registered: at},
	}
	h.markRegistered(nodes, marked)
	h.markRegistered(nodes, marked) // unchanged: no second mark
	got := h.tracker.Nodes()
	if len(got) != 1 || got[0].MAC != "52:54:00:00:00:07" {
		t.Fatalf("tracked %+v, want only node7 (the head is not a booting node)", got)
	}
	var stages []string
	for _, e := range got[0].History {
		stages = append(stages, e.Stage)
	}
	if len(stages) != 2 || stages[0] != bootstage.RootFetched || stages[1] != bootstage.Registered {
		t.Errorf("stages %v, want [%s %s]", stages, bootstage.RootFetched, bootstage.Registered)
	}
	// A reboot registers again: marked again.
	nodes[1].Registered = at.Add(time.Hour)
	h.markRegistered(nodes, marked)
	if n := len(h.tracker.Nodes()[0].History); n != 4 {
		t.Errorf("after a new registration, %d events, want 4", n)
	}
}
