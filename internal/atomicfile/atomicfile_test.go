package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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

func TestWriteDurable(t *testing.T) {
	dir := t.TempDir()
	// The folder is created, as by Write: the lease file's folder is the
	// caller's choice.
	path := filepath.Join(dir, "state", "leases.json")
	for _, content := range []string{"one\n", "two\n"} {
		if err := WriteDurable(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Errorf("got %q (%v), want %q", got, err, content)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

// holdOpen opens path and returns what that open file reads later: a
// replacement by rename leaves it the old content.
func holdOpen(t *testing.T, path string) func() string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return func() string {
		buf := make([]byte, 64)
		n, _ := f.ReadAt(buf, 0)
		return string(buf[:n])
	}
}

func TestCopy(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := os.WriteFile(src, []byte("payload"), 0o640); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(src, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte("a much longer previous content"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A reader holding the old dst keeps reading the old content: the copy
	// is renamed over it, not written into it.
	held := holdOpen(t, dst)

	check := func(o CopyOptions, wantMode os.FileMode, wantOldTime bool) {
		t.Helper()
		if err := Copy(src, dst, o); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(dst)
		fi, _ := os.Stat(dst)
		if string(got) != "payload" || fi.Mode().Perm() != wantMode || fi.ModTime().Equal(old) != wantOldTime {
			t.Errorf("%+v: got %q mode %v time %v; want \"payload\" mode %v, src's time %v",
				o, got, fi.Mode().Perm(), fi.ModTime(), wantMode, wantOldTime)
		}
	}
	check(CopyOptions{}, 0o640, false)
	check(CopyOptions{Mode: 0o755, KeepTime: true, Sync: true}, 0o755, true)

	if got := held(); got != "a much longer previous content" {
		t.Errorf("the old file was changed in place: %q", got)
	}

	// Failures leave dst as it was and no temporary file.
	for _, bad := range []string{filepath.Join(dir, "missing"), dir} {
		if err := Copy(bad, dst, CopyOptions{}); err == nil {
			t.Errorf("copying %s succeeded", bad)
		}
	}
	if err := Copy(src, filepath.Join(dir, "no", "folder"), CopyOptions{}); err == nil {
		t.Error("copying into a missing folder succeeded")
	}
	if got, _ := os.ReadFile(dst); string(got) != "payload" {
		t.Errorf("a failed copy changed dst to %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("folder holds %v, want only src and dst", entries)
	}
}

func TestLink(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := os.WriteFile(src, []byte("new"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	held := holdOpen(t, dst)
	// Twice: linking again the file that is already there leaves no
	// temporary name behind.
	for range 2 {
		if err := Link(src, dst); err != nil {
			t.Fatal(err)
		}
		a, _ := os.Stat(src)
		b, _ := os.Stat(dst)
		if !os.SameFile(a, b) {
			t.Error("Link on one file system did not link")
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 2 {
			t.Errorf("folder holds %v, want only src and dst", entries)
		}
	}
	if got := held(); got != "old" {
		t.Errorf("the old file was changed in place: %q", got)
	}
	if err := Link(filepath.Join(dir, "missing"), dst); err == nil {
		t.Error("linking a missing file succeeded")
	}
	if got, _ := os.ReadFile(dst); string(got) != "new" {
		t.Errorf("a failed link changed dst to %q", got)
	}
}

func TestLinkAcrossFileSystems(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "cdtest-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	dir := t.TempDir()
	var a, b syscall.Stat_t
	if syscall.Stat(shm, &a) != nil || syscall.Stat(dir, &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm and the test folder are on one file system")
	}
	src, dst := filepath.Join(shm, "layer.squashfs"), filepath.Join(dir, "layer.squashfs")
	if err := os.WriteFile(src, []byte("squash"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := Link(src, dst); err != nil {
		t.Fatalf("Link across file systems: %v", err)
	}
	got, _ := os.ReadFile(dst)
	fi, _ := os.Stat(dst)
	if string(got) != "squash" || fi.Mode().Perm() != 0o640 {
		t.Errorf("copy holds %q mode %v, want \"squash\" 0640", got, fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("folder holds %v, want only the copy", entries)
	}
}

func TestSetAside(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "leases.json")
	now := time.Date(2026, 1, 30, 7, 15, 0, 0, time.FixedZone("X", 3600))
	var got []string
	for _, content := range []string{"{trunc", "{again"} {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		dst, err := SetAside(p, now)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(dst); err != nil || string(b) != content {
			t.Fatalf("%s holds %q, %v; want %q", dst, b, err, content)
		}
		got = append(got, filepath.Base(dst))
	}
	want := []string{"leases.json.corrupt-20260130T061500Z", "leases.json.corrupt-20260130T061500Z.1"}
	if got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("set aside as %v, want %v", got, want)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("original still there: %v", err)
	}
}
