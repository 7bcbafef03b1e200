package markedblock

import "testing"

func TestReplace(t *testing.T) {
	block := Begin + "\nnew\n" + End + "\n"
	for _, tc := range []struct {
		in    string
		first bool
		want  string
	}{
		{"a\nb", true, block + "a\nb\n"},
		{"a\nb\n", false, "a\nb\n" + block},
		{"", false, block},
		{"a\n" + Begin + " (old)\nold\n" + End + "\nz\n", false, "a\n" + block + "z\n"},
		// A lost end marker: only the begin marker goes, no line is lost.
		{"a\n" + Begin + "\nkeep\n", true, block + "a\nkeep\n"},
	} {
		if got := string(Replace([]byte(tc.in), block, tc.first)); got != tc.want {
			t.Errorf("Replace(%q, first=%v) = %q, want %q", tc.in, tc.first, got, tc.want)
		}
	}
}
