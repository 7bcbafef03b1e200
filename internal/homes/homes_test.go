package homes

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestEach(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"root", "home/bob", "home/alice", "home/lost+found", "elsewhere"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Not homes: a file, and a link to a folder (it must not be followed).
	if err := os.WriteFile(filepath.Join(root, "home/notes"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "elsewhere"), filepath.Join(root, "home/mallory")); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := Each(root, func(h Home) error {
		got = append(got, strings.TrimPrefix(h.Path, root+"/"))
		if h.UID != os.Getuid() || h.GID != os.Getgid() {
			t.Errorf("%s: owner %d:%d, want the folder's %d:%d", h.Path, h.UID, h.GID, os.Getuid(), os.Getgid())
		}
		if strings.HasSuffix(h.Path, "alice") {
			return errors.New("alice failed")
		}
		return nil
	})
	// alice's error does not stop bob, and comes back.
	if want := []string{"root", "home/alice", "home/bob"}; !slices.Equal(got, want) {
		t.Errorf("visited %v, want %v", got, want)
	}
	if err == nil || err.Error() != "alice failed" {
		t.Errorf("Each = %v, want alice's error", err)
	}
}

func TestEachWithoutHomes(t *testing.T) {
	// No root/home: root's home alone. No root/root either: nothing.
	root := t.TempDir()
	count := func() int {
		n := 0
		if err := Each(root, func(Home) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Errorf("an empty root has %d homes", n)
	}
	if err := os.Mkdir(filepath.Join(root, "root"), 0o700); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("a root with only root's home has %d homes", n)
	}
	// root/home that is a file cannot be read: an error, and no calls.
	if err := os.WriteFile(filepath.Join(root, "home"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	called := false
	if err := Each(root, func(Home) error { called = true; return nil }); err == nil || called {
		t.Errorf("unreadable root/home: Each = %v, called %v; want an error and no calls", err, called)
	}
}
