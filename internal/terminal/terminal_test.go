package terminal

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// The machine running the tests may have no terminal; these are the
// streams that must never count as one.
func TestNotTerminals(t *testing.T) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for name, v := range map[string]any{"/dev/null": null, "a pipe": w, "a file": file, "a buffer": &bytes.Buffer{}, "nil": nil} {
		if Is(v) || CanRedraw(v) {
			t.Errorf("%s counts as a terminal", name)
		}
	}
}

// TestPseudoTerminal opens a pseudo-terminal pair: its follower side is a
// terminal, and redraws unless TERM says the terminal is dumb.
func TestPseudoTerminal(t *testing.T) {
	leader, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer leader.Close()
	if err := unix.IoctlSetPointerInt(int(leader.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(leader.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	follower, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	t.Setenv("TERM", "xterm")
	if !Is(follower) || !CanRedraw(follower) {
		t.Errorf("%s is not taken for a terminal that redraws", follower.Name())
	}
	t.Setenv("TERM", "dumb")
	if !Is(follower) || CanRedraw(follower) {
		t.Error("with TERM=dumb: want a terminal that does not redraw")
	}
}
