package cli

import (
	"context"
	"io"
	"log/slog"
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
