package head

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

func TestNFSDThreads(t *testing.T) {
	for _, c := range []struct{ cores, nodes, want int }{
		{1, 0, NFSDMinThreads},                  // never below Debian's default
		{1, 3, NFSDMinThreads},                  // a small room: the default does
		{4, 3, 4 * NFSDThreadsPerCore},          // the cores' floor
		{4, 100, 100},                           // a storm: one thread per node
		{64, 10, 64 * NFSDThreadsPerCore},       // a big node1, few nodes
		{8, 5000, NFSDMaxThreads},               // bounded
		{0, 0, NFSDMinThreads},                  // unknown cores
		{2, NFSDMaxThreads + 1, NFSDMaxThreads}, // just past the bound
		{2, NFSDMaxThreads - 1, NFSDMaxThreads - 1},
	} {
		if got := NFSDThreads(c.cores, c.nodes); got != c.want {
			t.Errorf("NFSDThreads(%d cores, %d nodes) = %d, want %d", c.cores, c.nodes, got, c.want)
		}
	}
}

// setNFSDThreads on a stand-in for /proc/fs/nfsd/threads: it sets a
// running server's count, leaves a stopped server alone (writing would
// start it without nfs-server.service's setup) and says why.
func TestSetNFSDThreads(t *testing.T) {
	dir := t.TempDir()
	file := func(content string) string {
		p := filepath.Join(dir, "threads")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := file("8\n")
	was, err := setNFSDThreads(p, 100)
	if err != nil || was != 8 {
		t.Fatalf("running server: was %d, %v", was, err)
	}
	if data, _ := os.ReadFile(p); string(data) != "100\n" {
		t.Errorf("threads file holds %q, want 100", data)
	}

	p = file("0\n")
	if _, err := setNFSDThreads(p, 100); !errors.Is(err, errNFSDNotRunning) {
		t.Errorf("stopped server: %v, want errNFSDNotRunning", err)
	}
	if data, _ := os.ReadFile(p); string(data) != "0\n" {
		t.Errorf("a stopped server's file was written: %q", data)
	}

	if _, err := setNFSDThreads(file("eight\n"), 100); err == nil || !strings.Contains(err.Error(), "eight") {
		t.Errorf("garbage in the file: %v", err)
	}
	if _, err := setNFSDThreads(filepath.Join(dir, "missing"), 100); err == nil {
		t.Error("no nfsd in the kernel: no error")
	}
}

// The export set asks for the thread count that suits the exported nodes
// each time they change, and not again while the count stays.
func TestExportSetNFSDThreads(t *testing.T) {
	sys := newFakeSystem(t.TempDir())
	e, err := newExportSet("", contract.RootShared, sys, slog.New(slog.DiscardHandler))
	must(t, err)
	e.cores = 1
	ctx := context.Background()
	threadCalls := func() []string {
		var out []string
		for _, c := range sys.calls() {
			if strings.HasPrefix(c, "nfsd threads ") {
				out = append(out, c)
			}
		}
		return out
	}
	for i := range 12 {
		hw := net.HardwareAddr{0x52, 0x54, 0, 0, 3, byte(i)}
		must(t, e.wait(ctx, e.add(hw.String(), netip.AddrFrom4([4]byte{10, 99, 0, byte(10 + i)}))))
	}
	// One call for counts 1..8 (all NFSDMinThreads), then one per node.
	var want []string
	for _, n := range []int{NFSDMinThreads, 9, 10, 11, 12} {
		want = append(want, fmt.Sprintf("nfsd threads %d", n))
	}
	if got := threadCalls(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("thread calls %q, want %q", got, want)
	}
}
