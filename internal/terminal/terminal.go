// Package terminal tells whether a stream is a terminal, through
// golang.org/x/term (which asks the kernel for the terminal's settings), so
// that every command decides the same way whether to ask a question, redraw
// in place or put the terminal in raw mode.
package terminal

import (
	"os"

	"golang.org/x/term"
)

// Is reports whether v, a reader or writer, is an *os.File open on a
// terminal. A pipe, a regular file, /dev/null (a character device, but no
// terminal) or anything not an *os.File is not.
func Is(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// CanRedraw reports whether w is a terminal that takes cursor movement and
// clearing, for output that redraws in place: Is, and TERM is not "dumb"
// (an Emacs shell buffer, for one, prints the escapes as text).
func CanRedraw(w any) bool {
	return Is(w) && os.Getenv("TERM") != "dumb"
}
