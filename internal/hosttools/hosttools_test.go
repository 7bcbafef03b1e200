package hosttools

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPresentAlternatives: a file tool is present when any of its paths
// exists, as ipxe-qemu's ROMs are in one place on Debian 12 and in another
// on 13.
func TestPresentAlternatives(t *testing.T) {
	dir := t.TempDir()
	old, moved := filepath.Join(dir, "lib", "rom"), filepath.Join(dir, "share", "rom")
	tool := Tool{Name: "rom", Path: old + ":" + moved, Package: "p", Purpose: VM}
	if tool.Present() {
		t.Fatalf("%s: present with neither path", tool.Path)
	}
	for _, p := range []string{moved, old} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if !tool.Present() {
			t.Errorf("%s: missing with %s there", tool.Path, p)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestToolsWellFormed: every tool has a name, a package and a purpose, and
// its path is a bare command or absolute paths only.
func TestToolsWellFormed(t *testing.T) {
	for _, tool := range Tools {
		if tool.Name == "" || tool.Package == "" || tool.Why == "" {
			t.Errorf("%+v: lacks a name, package or reason", tool)
		}
		if _, err := ParsePurpose(string(tool.Purpose)); err != nil {
			t.Errorf("%s: %v", tool.Name, err)
		}
		if strings.HasPrefix(tool.Path, "/") {
			for p := range strings.SplitSeq(tool.Path, ":") {
				if !filepath.IsAbs(p) {
					t.Errorf("%s: path %q of %q is not absolute", tool.Name, p, tool.Path)
				}
			}
		} else if strings.ContainsAny(tool.Path, "/:") || tool.Path == "" {
			t.Errorf("%s: %q is neither a command name nor absolute paths", tool.Name, tool.Path)
		}
	}
}
