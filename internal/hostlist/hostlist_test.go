package hostlist

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

var allNodes = []string{"node1", "node2", "node3"}

func TestExpand(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{"node1", []string{"node1"}},
		{"node[2-5,9]", []string{"node2", "node3", "node4", "node5", "node9"}},
		{"node[01-03]", []string{"node01", "node02", "node03"}},
		{"node[08-10]", []string{"node08", "node09", "node10"}},
		{"node[007]", []string{"node007"}},
		{"node1,node[3-4]", []string{"node1", "node3", "node4"}},
		{"all", allNodes},
		{"all,node9", []string{"node1", "node2", "node3", "node9"}},
		{"node[1-2],node[2-3]", []string{"node1", "node2", "node3"}}, // each once
		{"rack[1-2]-n[1-2]", []string{"rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"}},
		{"[1-2]x", []string{"1x", "2x"}},
		{"node[3-3]", []string{"node3"}},
		{" node1 , node2 ", []string{"node1", "node2"}},
		{"10.0.0.[1-2]", []string{"10.0.0.1", "10.0.0.2"}},
		{"n[0-65535]", nil}, // exactly MaxHosts; checked by length below
	}
	for _, tt := range tests {
		got, err := Expand(tt.expr, allNodes)
		if err != nil {
			t.Errorf("Expand(%q): %v", tt.expr, err)
			continue
		}
		if tt.want == nil {
			if len(got) != MaxHosts {
				t.Errorf("Expand(%q): %d names, want %d", tt.expr, len(got), MaxHosts)
			}
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Expand(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

func TestExpandErrors(t *testing.T) {
	tests := []struct {
		expr string
		want string // in the message
	}{
		{"node[5-2]", "descending"},
		{"node[", "not closed"},
		{"node[1-2", "not closed"},
		{"node1]", "without '['"},
		{"node[[1]]", "nested"},
		{"node[a-b]", "not a number"},
		{"node[1-b]", "not a number"},
		{"node[-3]", "both sides"},
		{"node[3-]", "both sides"},
		{"node[]", "empty brackets"},
		{"node[1,,2]", "empty range"},
		{"node1,,node2", "empty item"},
		{",node1", "empty item"},
		{"node1,", "empty item"},
		{"", "empty host list"},
		{"  ", "empty host list"},
		{"node[1-1000000]", "more than 65536"},
		{"node[0-65536]", "more than 65536"},
		{"a[1-300]b[1-300]", "more than 65536"},
		{"a[1-60000],b[1-60000]", "more than 65536"},
		{"node[1-99999999999999999999]", "too long"},
		{"node 1", "space"},
		{"node[1-2-3]", "not a number"},
	}
	for _, tt := range tests {
		got, err := Expand(tt.expr, allNodes)
		if err == nil {
			t.Errorf("Expand(%q) = %q, want an error about %q", tt.expr, got, tt.want)
			continue
		}
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Expand(%q) error %q, want one about %q", tt.expr, err, tt.want)
		}
		if tt.expr != "" && strings.TrimSpace(tt.expr) != "" && !strings.Contains(err.Error(), strings.TrimSpace(strings.Split(tt.expr, ",")[0])) && !strings.Contains(err.Error(), tt.expr) {
			t.Errorf("Expand(%q) error %q does not name the input", tt.expr, err)
		}
	}
}

func TestCompress(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"node3", "node1", "node2", "node7"}, "node[1-3,7]"},
		{[]string{"node1"}, "node1"},
		// A range keeps the width of its padded bounds: 10 is two digits wide.
		{[]string{"node08", "node09", "node10"}, "node[08-10]"},
		{[]string{"node01", "node02", "node10"}, "node[01-02,10]"},
		{[]string{"node098", "node099", "node100", "node101"}, "node[098-101]"},
		{[]string{"node5", "node08", "node09"}, "node5,node[08-09]"},
		{[]string{"node9", "node10", "node08"}, "node9,node[08,10]"},
		{[]string{"node9", "node10", "node11"}, "node[9-11]"},
		{[]string{"node05"}, "node05"},
		{[]string{"b1", "a2", "a1", "a1"}, "a[1-2],b1"},
		{[]string{"head", "node2", "node4"}, "node[2,4],head"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := Compress(tt.in); got != tt.want {
			t.Errorf("Compress(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzExpand checks that Expand never panics, never exceeds MaxHosts, and
// that what it expands, Compress writes back to the same set of names.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{"node[2-5,9]", "node[01-03]", "node1,node[3-4]", "all", "node[5-2]",
		"node[", "node[a-b]", "a,,b", "n[0-65535]", "r[1-2]-n[08-10]", "]", "[1]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		got, err := Expand(expr, allNodes)
		if err != nil {
			return
		}
		if len(got) > MaxHosts {
			t.Fatalf("Expand(%q): %d names", expr, len(got))
		}
		if len(got) > 1000 {
			return // the round trip below is quadratic-ish; enough checked
		}
		back, err := Expand(Compress(got), nil)
		if err != nil {
			t.Fatalf("Expand(Compress(Expand(%q))): %v (compressed %q)", expr, err, Compress(got))
		}
		a, b := slices.Clone(got), back
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Fatalf("round trip of %q: %q -> %q -> %q", expr, got, Compress(got), back)
		}
	})
}

// FuzzCompress starts from names: every whitespace-separated word that
// Expand reads as that one name. Compress writes them as a hostlist that
// Expand reads back to the same set, and that Compress writes again
// unchanged. (It is not always shorter: "[00-01]" is longer than "00,01".)
func FuzzCompress(f *testing.F) {
	f.Add("node1 node2 node3 node7")
	f.Fuzz(func(t *testing.T, words string) {
		var names []string
		for _, w := range strings.Fields(words) {
			if got, err := Expand(w, nil); err == nil && len(got) == 1 && got[0] == w {
				names = append(names, w)
			}
		}
		if len(names) == 0 {
			return
		}
		c := Compress(names)
		back, err := Expand(c, nil)
		if err != nil {
			t.Fatalf("Expand(Compress(%q)) = %v (compressed %q)", names, err, c)
		}
		want := slices.Clone(names)
		slices.Sort(want)
		want = slices.Compact(want)
		got := slices.Clone(back)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("round trip of %q: %q -> %q", names, c, back)
		}
		if again := Compress(back); again != c {
			t.Fatalf("Compress not stable: %q -> %q -> %q", names, c, again)
		}
	})
}
