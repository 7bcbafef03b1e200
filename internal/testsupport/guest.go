package testsupport

import (
	"context"
	"testing"
	"time"
)

// ExecFunc runs argv in a machine as root and returns its output and exit
// code; err is for when it could not run at all. (*vm.Cluster).Exec is
// one; vm.QGAExec on a guest agent's socket makes another.
type ExecFunc func(ctx context.Context, argv ...string) (stdout, stderr string, code int, err error)

// Guest runs shell scripts in one machine, for a test.
type Guest struct {
	Name string
	Exec ExecFunc
	// Timeout bounds each script, as a guard against a hang; default 10
	// minutes.
	Timeout time.Duration
}

// Try runs a bash script as root and returns its combined output and exit
// code. It fails t when the script could not run at all.
func (g Guest) Try(t testing.TB, ctx context.Context, script string) (string, int) {
	t.Helper()
	limit := g.Timeout
	if limit == 0 {
		limit = 10 * time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	stdout, stderr, code, err := g.Exec(cctx, "/bin/bash", "-c", script)
	if err != nil {
		t.Fatalf("%s: exec %q: %v", g.Name, script, err)
	}
	return stdout + stderr, code
}

// Sh runs a bash script as root and fails t when it exits non-zero.
func (g Guest) Sh(t testing.TB, ctx context.Context, script string) string {
	t.Helper()
	out, code := g.Try(t, ctx, script)
	if code != 0 {
		t.Fatalf("%s: %q exited %d:\n%s", g.Name, script, code, out)
	}
	return out
}
