package bootstorm

import (
	"strings"
	"testing"
)

func TestParseReadSet(t *testing.T) {
	rs, err := ParseReadSet("# 2 files\n4096\t/usr/lib/a b.so\n\n12 /etc/hostname\n")
	if err != nil {
		t.Fatal(err)
	}
	if rs.Bytes != 4108 || rs.Files["/usr/lib/a b.so"] != 4096 || rs.Files["/etc/hostname"] != 12 || len(rs.Source) != 1 {
		t.Errorf("got %+v", rs)
	}
	for _, bad := range []struct{ text, want string }{
		{"x\t/a\n", "line 1"},
		{"1\t/a\n-1\t/b\n", "line 2"},
		{"1\trelative\n", "absolute path"},
		{"1\t/a\n2\t/a\n", "twice"},
		{"# only a comment\n", "no files"},
	} {
		if _, err := ParseReadSet(bad.text); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseReadSet(%q) = %v, want an error with %q", bad.text, err, bad.want)
		}
	}
}

// TestRecordedReadSet checks the read set kept in the repository parses
// and looks like a Debian system's boot: systemd and libc among its files.
func TestRecordedReadSet(t *testing.T) {
	rs, err := RecordedReadSet()
	if err != nil {
		t.Fatal(err)
	}
	var systemd, libc bool
	for p := range rs.Files {
		systemd = systemd || strings.HasSuffix(p, "/systemd")
		libc = libc || strings.Contains(p, "/libc.so")
	}
	if !systemd || !libc || rs.Bytes < 10<<20 {
		t.Errorf("the recorded read set (%d files, %d bytes) lacks systemd (%v) or libc (%v), or is under 10 MiB", len(rs.Files), rs.Bytes, systemd, libc)
	}
}
