package cli

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

func TestPrune(t *testing.T) {
	const tok = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	reg, err := registry.Open(filepath.Join(t.TempDir(), "nodes.json"), contract.Naming{Subnet: netip.MustParsePrefix("10.99.0.0/24"), Head: netip.MustParseAddr("10.99.0.1")}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Flush() })
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reg.SetClock(func() time.Time { return now })
	if _, err := reg.Register(registry.RegisterRequest{MAC: "52:54:00:00:00:05", IP: "10.99.0.5"}); err != nil {
		t.Fatal(err)
	}
	reg.Sweep(now.Add(time.Minute))
	srv := httptest.NewServer(registry.NewAPI(reg, tok, nil, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()

	var out strings.Builder
	err = prune(context.Background(), &out, registry.NewClient(srv.URL, "wrong", nil))
	if err == nil || !strings.Contains(err.Error(), "401") || len(reg.Nodes()) != 1 {
		t.Errorf("wrong token: %v, want a 401 error and node5 kept", err)
	}
	if err := prune(context.Background(), &out, registry.NewClient(srv.URL, tok, nil)); err != nil {
		t.Fatal(err)
	}
	if out.String() != "removed node5 (10.99.0.5, 52:54:00:00:00:05)\n" || len(reg.Nodes()) != 0 {
		t.Errorf("prune said %q, left %v", out.String(), reg.Nodes())
	}
	out.Reset()
	if err := prune(context.Background(), &out, registry.NewClient(srv.URL, tok, nil)); err != nil || out.String() != "no node is down: nothing to prune\n" {
		t.Errorf("prune with nothing down: %v, said %q", err, out.String())
	}
	// A head that is not there: the error says what to check.
	srv.Close()
	if err := prune(context.Background(), &out, registry.NewClient(srv.URL, tok, nil)); err == nil || !strings.Contains(err.Error(), "is clusterdebian-head running?") {
		t.Errorf("prune without a head: %v", err)
	}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, contract.TokenFile), []byte(tok+"\n"), 0o600)
	if got, err := readToken(dir); err != nil || got != tok {
		t.Errorf("readToken = %q, %v", got, err)
	}
	if _, err := readToken(t.TempDir()); err == nil {
		t.Error("readToken without a file: no error")
	}
}

// TestPruneInterrupted cancels prune's context while its request is on the
// way: before the head got it (nothing removed, and it says so), and once
// the head has it (the head finishes, as its handler ignores the client
// going away, and prune names what was removed).
func TestPruneInterrupted(t *testing.T) {
	const tok = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, arrived := range []bool{false, true} {
		reg, err := registry.Open(filepath.Join(t.TempDir(), "nodes.json"), contract.Naming{Subnet: netip.MustParsePrefix("10.99.0.0/24"), Head: netip.MustParseAddr("10.99.0.1")}, time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		reg.SetClock(func() time.Time { return now })
		for _, ip := range []string{"10.99.0.5", "10.99.0.6"} {
			mac := "52:54:00:00:00:0" + ip[len(ip)-1:]
			if _, err := reg.Register(registry.RegisterRequest{MAC: mac, IP: ip}); err != nil {
				t.Fatal(err)
			}
		}
		reg.Sweep(now.Add(time.Minute)) // both down
		ctx, cancel := context.WithCancel(context.Background())
		api := registry.NewAPI(reg, tok, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != registry.PathPrune {
				api.ServeHTTP(w, r)
				return
			}
			// Ctrl-C with the request on the wire: lost on the way (the
			// head never pruned), or after the head pruned and before its
			// answer left. Nothing is answered until the client gave up.
			if arrived {
				api.ServeHTTP(httptest.NewRecorder(), r)
			}
			cancel()
			<-r.Context().Done()
		}))
		var out strings.Builder
		err = prune(ctx, &out, registry.NewClient(srv.URL, tok, nil))
		srv.Close()
		reg.Flush()
		ee, ok := err.(*exitError)
		if !ok || ee.code != 130 {
			t.Fatalf("arrived %v: prune interrupted = %v, want exit 130", arrived, err)
		}
		t.Logf("arrived %v: %s", arrived, ee.msg)
		left := len(reg.Nodes())
		if arrived {
			if left != 0 || !strings.Contains(ee.msg, "after the head had pruned: it removed node5 (10.99.0.5), node6 (10.99.0.6)") {
				t.Errorf("prune that reached the head: %d nodes left, said %q", left, ee.msg)
			}
		} else {
			if left != 2 || !strings.Contains(ee.msg, "before the head pruned: nothing was removed") ||
				!strings.Contains(ee.msg, "still listed as down: node5 (10.99.0.5), node6 (10.99.0.6); run clusterdebian prune again") {
				t.Errorf("prune that never reached the head: %d nodes left, said %q", left, ee.msg)
			}
		}
		if out.Len() != 0 {
			t.Errorf("interrupted prune printed %q as if done", out.String())
		}
	}
}
