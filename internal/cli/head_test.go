package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
)

// TestHeadInputs: the head's errors about its options reach the user with
// the flag and cluster.toml key to change; others pass unchanged.
func TestHeadInputs(t *testing.T) {
	cause := errors.New("/x has no vmlinuz")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{inputerr.New(head.InputBootDir, "", cause), "--boot-dir / head.boot_dir: /x has no vmlinuz"},
		{fmt.Errorf("starting: %w", inputerr.New(head.InputSubnet, "", cause)), "starting: --subnet / network.subnet: /x has no vmlinuz"},
		{inputerr.New(head.InputIPXEDir, "", cause), "IPXEDir: /x has no vmlinuz"},
		{cause, "/x has no vmlinuz"},
	} {
		got := headInputs.explain(tc.err)
		if got.Error() != tc.want || !errors.Is(got, cause) {
			t.Errorf("explain(%v) = %q, want %q wrapping the cause", tc.err, got, tc.want)
		}
	}
	if headInputs.explain(nil) != nil {
		t.Error("explain(nil) is not nil")
	}
	// Every head input named is a field of head.Options.
	fields := reflect.TypeFor[head.Options]()
	for in := range headInputs {
		if strings.Contains(in, ".") {
			continue // a cluster.toml key
		}
		if _, ok := fields.FieldByName(in); !ok {
			t.Errorf("headInputs names %q, which head.Options lacks", in)
		}
	}
}

// TestBootInterface: node1's boot menu choice is read from its kernel
// command line, and only that parameter; a bad one names it.
func TestBootInterface(t *testing.T) {
	dir := t.TempDir()
	write := func(line string) string {
		p := filepath.Join(dir, "cmdline")
		if err := os.WriteFile(p, []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for line, want := range map[string]string{
		"BOOT_IMAGE=/live/vmlinuz boot=live quiet":                            "",
		"boot=live clusterdebian.interface=2 quiet":                           "2",
		"boot=live clusterdebian.interface=enp3s0 BOOTIF=garbage":             "enp3s0",
		"clusterdebian.interface=1 clusterdebian.interface=52:54:00:0a:0b:0c": "52:54:00:0a:0b:0c",
	} {
		if got, err := bootInterface(write(line)); err != nil || got != want {
			t.Errorf("bootInterface(%q) = %q, %v; want %q", line, got, err, want)
		}
	}
	if _, err := bootInterface(write("boot=live clusterdebian.interface=0")); err == nil || !strings.Contains(err.Error(), "clusterdebian.interface") {
		t.Errorf("a bad choice: %v, want an error naming clusterdebian.interface", err)
	}
	if got, err := bootInterface(filepath.Join(dir, "missing")); err != nil || got != "" {
		t.Errorf("no command line: %q, %v", got, err)
	}
	err := headInputs.explain(inputerr.New(head.InputBootInterface, "", errors.New("the 3rd wired card does not exist")))
	if !strings.Contains(err.Error(), "clusterdebian.interface= (node1's kernel command line): the 3rd") {
		t.Errorf("a bad boot choice reads %q", err)
	}
}
