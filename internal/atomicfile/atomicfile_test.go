package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "f")
	if err := WriteSync(path, []byte("x"), 0o644); err == nil {
		t.Error("WriteSync into a missing folder succeeded")
	}
	for _, write := range []func(string, []byte, os.FileMode) error{Write, WriteSync} {
		if err := write(path, []byte("one\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := write(path, []byte("two\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		fi, _ := os.Stat(path)
		if string(got) != "two\n" || fi.Mode().Perm() != 0o600 {
			t.Errorf("got %q mode %v, want \"two\\n\" 0600", got, fi.Mode().Perm())
		}
	}
	if err := WriteOwned(path, []byte("x"), 0o644, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	// A failed rename (the target is a folder) leaves no temporary file.
	if err := Write(filepath.Join(dir, "sub"), []byte("x"), 0o644); err == nil {
		t.Error("writing over a folder succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left behind after a failure: %v", entries)
	}
}
