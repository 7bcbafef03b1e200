package contract

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// FuzzParseCmdline reads hostile kernel command lines (a node's
// /proc/cmdline is whatever its boot loader was told). Whatever
// ParseCmdline accepts, Format writes back to a line that parses to the
// same Cmdline: the round trip is stable after one pass, and keeps every
// ClusterDebian parameter.
func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyS0,115200n8 console=tty0 clusterdebian.role=node clusterdebian.head=10.99.0.1 clusterdebian.token=abc clusterdebian.root=shared root=/dev/nfs nfsroot=10.99.0.1:/,vers=3,tcp ip=dhcp rw")
	f.Fuzz(func(t *testing.T, line string) {
		c, err := ParseCmdline(line)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ParseCmdline(%q): empty error", line)
			}
			return
		}
		once := c.Format()
		c2, err := ParseCmdline(once)
		if err != nil {
			t.Fatalf("ParseCmdline(Format(ParseCmdline(%q))) = %v; formatted %q", line, err, once)
		}
		if twice := c2.Format(); twice != once {
			t.Fatalf("round trip of %q not stable:\n once  %q\n twice %q", line, once, twice)
		}
		if c2.Node != c.Node || c2.Head != c.Head || c2.HTTPPort != c.HTTPPort || c2.Token != c.Token ||
			c2.Root != c.Root || c2.Interface != c.Interface || c2.BootMAC.String() != c.BootMAC.String() {
			t.Fatalf("round trip of %q lost a parameter: %+v -> %q -> %+v", line, c, once, c2)
		}
		if c.Root == RootRAM && !slices.Equal(c.Layers, c2.Layers) {
			t.Fatalf("round trip of %q lost layers: %q -> %q", line, c.Layers, c2.Layers)
		}
		if !slices.Equal(c.Extra, c2.Extra) {
			t.Fatalf("round trip of %q changed Extra: %q -> %q", line, c.Extra, c2.Extra)
		}
	})
}

// FuzzCheckExtra checks what CheckExtra lets through into a node's command
// line: no line breaks, control characters, quotes or script syntax, no
// ClusterDebian parameter, and, once formatted, the same parameters back
// from ParseCmdline (save those Format writes itself).
func FuzzCheckExtra(f *testing.F) {
	f.Add("quiet")
	f.Fuzz(func(t *testing.T, extra string) {
		if err := CheckExtra(extra); err != nil {
			return
		}
		if strings.ContainsAny(extra, "\n\r\x00\"'`$\\;&|") {
			t.Fatalf("CheckExtra(%q) accepted script syntax", extra)
		}
		c := Cmdline{Node: true, Head: netip.MustParseAddr("10.99.0.1"), Token: "tok", Extra: strings.Fields(extra)}
		line := c.Format()
		got, err := ParseCmdline(line)
		if err != nil {
			t.Fatalf("ParseCmdline(%q) with accepted extra %q: %v", line, extra, err)
		}
		if !got.Node || got.Token != "tok" || got.BootMAC != nil || got.Root != RootShared {
			t.Fatalf("extra %q changed the head's parameters: %+v", extra, got)
		}
		var want []string
		for _, e := range strings.Fields(extra) {
			if !formatted(e) {
				want = append(want, e)
			}
		}
		if !slices.Equal(got.Extra, want) {
			t.Fatalf("extra %q came back as %q, want %q", extra, got.Extra, want)
		}
	})
}
