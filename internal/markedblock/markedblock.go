// Package markedblock keeps a block of lines that ClusterDebian owns inside
// a file that people and other tools also edit (/etc/hosts, ssh_known_hosts):
// the block is found by its markers and replaced, everything else is kept.
package markedblock

import (
	"slices"
	"strings"
)

// Markers of every ClusterDebian block.
const (
	Begin = "# BEGIN clusterdebian"
	End   = "# END clusterdebian"
)

// Replace returns text with block (markers included) in place of the marked
// block; when there is none, block goes at the start of text if first, else
// at its end.
func Replace(text []byte, block string, first bool) []byte {
	lines := strings.SplitAfter(string(text), "\n")
	begin, end := -1, -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if begin < 0 && strings.HasPrefix(t, Begin) {
			begin = i
		} else if begin >= 0 && t == End {
			end = i
			break
		}
	}
	if begin >= 0 && end < 0 {
		// The end marker was lost to a hand edit: drop only the begin
		// marker rather than guess where the block ended and lose lines.
		lines = slices.Delete(lines, begin, begin+1)
		begin = -1
	}
	if begin < 0 {
		rest := strings.Join(lines, "")
		if rest != "" && !strings.HasSuffix(rest, "\n") {
			rest += "\n"
		}
		if first {
			return []byte(block + rest)
		}
		return []byte(rest + block)
	}
	return []byte(strings.Join(lines[:begin], "") + block + strings.Join(lines[end+1:], ""))
}
