package head

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// A damaged booted nodes file does not stop the head: it is set aside and
// the export set starts empty.
func TestExportSetDamaged(t *testing.T) {
	state := filepath.Join(t.TempDir(), contract.BootedFile)
	bad := []byte(`{"version":1,"nodes":[{"mac":"52:54:00:00:00:05","ip":"10.9`)
	must(t, os.WriteFile(state, bad, 0o600))
	var logs bytes.Buffer
	e, err := newExportSet(state, contract.RootShared, newFakeSystem(t.TempDir()), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("a damaged %s stops the head: %v", state, err)
	}
	if got := e.Clients(); len(got) != 0 {
		t.Errorf("clients from a damaged file: %v", got)
	}
	kept, _ := filepath.Glob(state + ".corrupt-*")
	if len(kept) != 1 {
		t.Fatalf("damaged file kept as %v, want one copy", kept)
	}
	if got, _ := os.ReadFile(kept[0]); !bytes.Equal(got, bad) {
		t.Errorf("%s holds %q, want %q", kept[0], got, bad)
	}
	if !strings.Contains(logs.String(), "booted nodes file is damaged") {
		t.Errorf("log does not say what was done:\n%s", logs.String())
	}
}
