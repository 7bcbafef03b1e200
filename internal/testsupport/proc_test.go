package testsupport

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A server that exits on SIGTERM stops cleanly; one that ignores it is
// killed after StopGrace and reported.
func TestProcStop(t *testing.T) {
	dir := t.TempDir()
	p := StartProc(t, ProcSpec{What: "sleeper", Argv: []string{"sh", "-c", "echo started; exec sleep 600"},
		Log: filepath.Join(dir, "sleeper.log")})
	WaitFor(t, t.Context(), "the sleeper's output", 20*time.Millisecond, time.Minute,
		func() bool { return strings.Contains(p.Output(), "started") }, p.Output)
	if err := p.Stop(); err == nil {
		t.Error("sleep killed by SIGTERM: Stop says it stopped cleanly")
	}
	if Alive(p.Cmd.Process.Pid) {
		t.Error("still running after Stop")
	}

	clean := StartProc(t, ProcSpec{What: "trapper", Argv: []string{"sh", "-c", "trap 'exit 0' TERM; echo started; while :; do sleep 0.1; done"},
		Log: filepath.Join(dir, "trapper.log"), MustStopCleanly: true})
	WaitFor(t, t.Context(), "the trapper's output", 20*time.Millisecond, time.Minute,
		func() bool { return strings.Contains(clean.Output(), "started") }, clean.Output)
	if err := clean.Stop(); err != nil {
		t.Errorf("a server that exits 0 on SIGTERM: Stop says %v", err)
	}
	if err := clean.Stop(); err != nil {
		t.Errorf("Stop a second time: %v", err)
	}
}
