package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
)

// FuzzParse feeds hostile cluster.toml texts to Parse. It never panics; a
// config it accepts gives the addresses and kernel parameters the rest of
// the program takes from it without checking again; and every error says
// where the problem is: a line of the file, or a key.
func FuzzParse(f *testing.F) {
	f.Add(defaultTOML)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		c, err := Parse(text, "cluster.toml", dir)
		if err == nil {
			// These panic (MustParsePrefix) on a subnet Validate let by.
			_, _, _ = c.Subnet(), c.Address(), c.HeadAddr()
			if e := contract.CheckExtra(c.Image.KernelCmdline); e != nil {
				t.Fatalf("accepted image.kernel_cmdline %q: %v", c.Image.KernelCmdline, e)
			}
			if _, e := contract.ParseRootMode(string(c.Nodes.Root)); e != nil {
				t.Fatalf("accepted nodes.root %q: %v", c.Nodes.Root, e)
			}
			return
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "cluster.toml") {
			t.Fatalf("error does not name the file: %q", msg)
		}
		var ve *ValidationError
		if !errors.As(err, &ve) {
			if !strings.Contains(msg, "line ") && !strings.Contains(msg, "key") {
				t.Fatalf("error names no line and no key: %q", msg)
			}
			return
		}
		if len(ve.Errs) == 0 {
			t.Fatalf("ValidationError without errors for %q", text)
		}
		for _, e := range ve.Errs {
			all := inputerr.All(e)
			if len(all) == 0 || all[0].Input == "" {
				t.Fatalf("error names no key: %q", e)
			}
		}
	})
}
