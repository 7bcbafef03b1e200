package head

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// FuzzScriptExtra renders the iPXE and GRUB scripts with fuzzed
// image.kernel_cmdline parameters that contract.CheckExtra accepts: they
// must stay kernel parameters. The rendered script has the same lines,
// each starting with the same command, as without them; the parameters
// land on the kernel line only, and add no script expansion.
func FuzzScriptExtra(f *testing.F) {
	f.Add("quiet", false)
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	f.Fuzz(func(t *testing.T, extra string, ram bool) {
		if contract.CheckExtra(extra) != nil {
			return
		}
		c := contract.Cmdline{Node: true, Head: netip.MustParseAddr("10.99.0.1"), HTTPPort: 8080,
			Token: "0123abcd", Root: contract.RootShared, BootMAC: mac}
		if ram {
			c.Root, c.Layers = contract.RootRAM, []string{"02-custom.ext4"}
		}
		plain := c
		c.Extra = strings.Fields(extra)

		want, err := Script("node2", mac, plain)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Script("node2", mac, c)
		if err != nil {
			t.Fatalf("Script with extra %q: %v", extra, err)
		}
		sameCommands(t, "iPXE", extra, want, got, "kernel ", "${")
		sameCommands(t, "GRUB", extra, GRUBScript("node2", mac, plain), GRUBScript("node2", mac, c), "linux ", "${")
	})
}

// sameCommands checks that got has want's lines, each with the same first
// word, that only the line starting with kernelLine differs, and that got
// has no more of expand (a script expansion) than want.
func sameCommands(t *testing.T, kind, extra, want, got, kernelLine, expand string) {
	t.Helper()
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	if len(wl) != len(gl) {
		t.Fatalf("%s script with extra %q has %d lines, want %d:\n%s", kind, extra, len(gl), len(wl), got)
	}
	for i := range wl {
		if wl[i] == gl[i] {
			continue
		}
		if !strings.HasPrefix(wl[i], kernelLine) || !strings.HasPrefix(gl[i], kernelLine) {
			t.Fatalf("%s script with extra %q changed line %d: %q, want %q", kind, extra, i+1, gl[i], wl[i])
		}
	}
	if strings.Count(got, expand) != strings.Count(want, expand) {
		t.Fatalf("%s script with extra %q gained %s:\n%s", kind, extra, expand, got)
	}
}
