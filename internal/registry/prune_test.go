package registry

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestAPIPrune(t *testing.T) {
	var mu sync.Mutex
	var reported [][]Node
	reg, err := Open(filepath.Join(t.TempDir(), "nodes.json"), testNaming, time.Second, func(ns []Node) {
		mu.Lock()
		defer mu.Unlock()
		reported = append(reported, ns)
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	reg.SetClock(func() time.Time { return now })
	for _, r := range []RegisterRequest{req("52:54:00:00:00:02", "10.99.0.2"), req("52:54:00:00:00:03", "10.99.0.3"), req("52:54:00:00:00:04", "10.99.0.4")} {
		if _, err := reg.Register(r); err != nil {
			t.Fatal(err)
		}
	}
	// node3 keeps heartbeating; node2 and node4 fall silent and are swept.
	now = now.Add(10 * time.Second)
	if err := reg.Heartbeat("52:54:00:00:00:03", Stats{}); err != nil {
		t.Fatal(err)
	}
	reg.Sweep(now)
	if err := reg.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	reported = nil
	mu.Unlock()

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var pruned [][]string // what OnPrune was told, call by call
	srv := httptest.NewServer(NewAPI(reg, testToken, nil, log, OnPrune(func(gone []Node) {
		mu.Lock()
		defer mu.Unlock()
		pruned = append(pruned, nodeNames(gone))
	})))
	defer srv.Close()
	post := func(tok string) (int, []byte) {
		r, _ := http.NewRequest(http.MethodPost, srv.URL+PathPrune, nil)
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := srv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}

	for _, tok := range []string{"", "wrong"} {
		if status, body := post(tok); status != http.StatusUnauthorized {
			t.Errorf("prune with token %q: %d %s, want 401", tok, status, body)
		}
	}
	if n := len(reg.Nodes()); n != 3 {
		t.Fatalf("a refused prune changed the registry: %d nodes", n)
	}
	mu.Lock()
	if len(pruned) != 0 {
		t.Errorf("refused prunes called OnPrune: %q", pruned)
	}
	mu.Unlock()

	status, body := post(testToken)
	if status != http.StatusOK {
		t.Fatalf("prune: %d %s", status, body)
	}
	var gone []Node
	if err := json.Unmarshal(body, &gone); err != nil {
		t.Fatal(err)
	}
	if names := nodeNames(gone); !slices.Equal(names, []string{"node2", "node4"}) {
		t.Errorf("pruned %v, want node2 and node4", names)
	}
	if names := nodeNames(reg.Nodes()); !slices.Equal(names, []string{"node3"}) {
		t.Errorf("left %v, want node3", names)
	}
	if err := reg.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(reported) == 0 || !slices.Equal(nodeNames(reported[len(reported)-1]), []string{"node3"}) {
		t.Errorf("onChange got %v, want a call with node3 only", reported)
	}
	reported = nil
	mu.Unlock()

	// Nothing down: an empty list, and no change reported.
	status, body = post(testToken)
	if status != http.StatusOK || string(body) != "[]\n" {
		t.Errorf("second prune: %d %q, want 200 []", status, body)
	}
	reg.Flush()
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 0 {
		t.Errorf("a prune that removed nothing reported a change: %v", reported)
	}
	// OnPrune hears of both prunes, the one that removed nothing too.
	if len(pruned) != 2 || !slices.Equal(pruned[0], []string{"node2", "node4"}) || len(pruned[1]) != 0 {
		t.Errorf("OnPrune calls %q, want [node2 node4] then []", pruned)
	}
}

func nodeNames(ns []Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out
}
