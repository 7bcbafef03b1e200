package imagebuild

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeTree creates files under dir: a path ending in "/" is a folder, a value
// starting with "->" is a symbolic link to the rest, anything else is a file.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(name, "/"):
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(content, "->"):
			if err := os.Symlink(strings.TrimPrefix(content, "->"), p); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// dirNames lists the names in dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func openCache(t *testing.T, dir string) *Cache {
	t.Helper()
	c, err := OpenCache(dir)
	if err != nil {
		t.Fatalf("OpenCache(%s): %v", dir, err)
	}
	t.Cleanup(c.Close)
	return c
}

// committed makes a cache entry for stage and key holding files.
func committed(t *testing.T, c *Cache, stage, key string, files map[string]string) string {
	t.Helper()
	tmp, err := c.TempDir(stage)
	if err != nil {
		t.Fatal(err)
	}
	writeTree(t, tmp, files)
	dir, err := c.Commit(stage, key, tmp)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return dir
}

func TestKey(t *testing.T) {
	type opts struct {
		Suite    string
		Packages []string
	}
	base := []any{"bootstrap", 3, opts{"trixie", []string{"a", "b"}}, true}
	k := Key(base...)
	if !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(k) {
		t.Fatalf("Key = %q, want 24 hex digits", k)
	}
	if k2 := Key(base...); k2 != k {
		t.Errorf("Key is not deterministic: %s then %s", k, k2)
	}
	variants := map[string][]any{
		"stage name":     {"customize", 3, opts{"trixie", []string{"a", "b"}}, true},
		"number":         {"bootstrap", 4, opts{"trixie", []string{"a", "b"}}, true},
		"nested string":  {"bootstrap", 3, opts{"bookworm", []string{"a", "b"}}, true},
		"slice element":  {"bootstrap", 3, opts{"trixie", []string{"a", "c"}}, true},
		"slice order":    {"bootstrap", 3, opts{"trixie", []string{"b", "a"}}, true},
		"slice length":   {"bootstrap", 3, opts{"trixie", []string{"a", "b", "c"}}, true},
		"bool":           {"bootstrap", 3, opts{"trixie", []string{"a", "b"}}, false},
		"extra part":     {"bootstrap", 3, opts{"trixie", []string{"a", "b"}}, true, ""},
		"missing part":   {"bootstrap", 3, opts{"trixie", []string{"a", "b"}}},
		"parts reversed": {true, opts{"trixie", []string{"a", "b"}}, 3, "bootstrap"},
	}
	seen := map[string]string{k: "base"}
	for name, parts := range variants {
		v := Key(parts...)
		if prev, dup := seen[v]; dup {
			t.Errorf("Key for %q equals the key for %q: %s", name, prev, v)
		}
		seen[v] = name
	}
	// Parts are delimited: moving text between parts changes the key.
	if Key("ab", "c") == Key("a", "bc") {
		t.Error(`Key("ab", "c") == Key("a", "bc")`)
	}
	if Key() == Key("") {
		t.Error(`Key() == Key("")`)
	}
}

func TestOpenCacheLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	c, err := OpenCache(dir)
	if err != nil {
		t.Fatalf("OpenCache: %v", err)
	}
	if c.Dir != dir {
		t.Errorf("Dir = %q, want %q", c.Dir, dir)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(dir, "lock"))); got != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file holds %q, want our pid %d", got, os.Getpid())
	}
	if fi, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || !fi.IsDir() {
		t.Errorf("OpenCache did not make the tmp folder: %v", err)
	}

	c2, err := OpenCache(dir)
	if err == nil {
		c2.Close()
		t.Fatal("second OpenCache on a locked cache succeeded")
	}
	for _, w := range []string{dir, "another clusterdebian build", "pid " + strconv.Itoa(os.Getpid())} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}

	c.Close()
	c.Close() // closing twice is harmless
	c3, err := OpenCache(dir)
	if err != nil {
		t.Fatalf("OpenCache after Close: %v", err)
	}
	c3.Close()
}

func TestOpenCacheBadDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenCache(file)
	if err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("OpenCache on a file = %v, want an error naming it", err)
	}
}

func TestOpenCacheClearsLeftoverTmp(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	writeTree(t, tmp, map[string]string{
		"bootstrap-123/root/etc/passwd": "root:x:0:0::/root:/bin/bash\n",
		"bootstrap-123/root/dev/":       "",
		"customize-9/link":              "->/etc/passwd",
		"stray-file":                    "x",
	})
	// A read-only folder inside must not stop the clean-up.
	if err := os.Chmod(filepath.Join(tmp, "bootstrap-123", "root"), 0o500); err != nil {
		t.Fatal(err)
	}
	// A finished entry outside tmp is kept.
	writeTree(t, dir, map[string]string{"iso/abc/keep": "x"})

	openCache(t, dir)
	if names := dirNames(t, tmp); len(names) != 0 {
		t.Errorf("tmp still holds %v", names)
	}
	if !exists(filepath.Join(dir, "iso/abc/keep")) {
		t.Error("OpenCache removed a cache entry outside tmp")
	}
	if !exists("/etc/passwd") {
		t.Fatal("clean-up followed a symbolic link out of the cache")
	}
}

func TestCommitLookupRoundTrip(t *testing.T) {
	c := openCache(t, t.TempDir())
	key := Key("input")

	if _, ok, reason := c.Lookup("bootstrap", key); ok || reason != "not cached" {
		t.Errorf("Lookup before Commit = ok %v, %q; want a miss, \"not cached\"", ok, reason)
	}

	tmp, err := c.TempDir("bootstrap")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(tmp) != filepath.Join(c.Dir, "tmp") || !strings.HasPrefix(filepath.Base(tmp), "bootstrap-") {
		t.Errorf("TempDir = %q, want a bootstrap-* folder in %s/tmp", tmp, c.Dir)
	}
	files := map[string]string{
		"vmlinuz":          "kernel",
		"etc/passwd":       "root:x:0:0::/root:/bin/bash\n",
		"etc/empty/":       "",
		"etc/skel/.bashrc": "# bashrc\n",
		"initrd.img":       "->initrd.img-6.12",
		"initrd.img-6.12":  "initrd",
	}
	writeTree(t, tmp, files)
	if err := os.Chmod(filepath.Join(tmp, "vmlinuz"), 0o600); err != nil {
		t.Fatal(err)
	}

	dir, err := c.Commit("bootstrap", key, tmp)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if want := filepath.Join(c.Dir, "bootstrap", key); dir != want {
		t.Errorf("Commit = %q, want %q", dir, want)
	}
	if exists(tmp) {
		t.Error("Commit left the scratch folder behind")
	}
	if !exists(filepath.Join(dir, manifestName)) {
		t.Error("Commit wrote no manifest")
	}

	got, ok, reason := c.Lookup("bootstrap", key)
	if !ok || got != dir || reason != "cached" {
		t.Fatalf("Lookup = %q, %v, %q; want %q, true, \"cached\"", got, ok, reason, dir)
	}
	if readFile(t, filepath.Join(got, "etc/skel/.bashrc")) != "# bashrc\n" {
		t.Error("entry content differs from what was committed")
	}
	if l, err := os.Readlink(filepath.Join(got, "initrd.img")); err != nil || l != "initrd.img-6.12" {
		t.Errorf("symbolic link = %q, %v", l, err)
	}
	// A second lookup still hits: Lookup itself does not disturb the entry.
	if _, ok, reason := c.Lookup("bootstrap", key); !ok {
		t.Errorf("second Lookup missed: %s", reason)
	}
	// Another stage or key is a miss.
	if _, ok, _ := c.Lookup("iso", key); ok {
		t.Error("Lookup of another stage hit")
	}
	if _, ok, _ := c.Lookup("bootstrap", Key("other")); ok {
		t.Error("Lookup of another key hit")
	}

	// Committing the same key again replaces the entry.
	dir2 := committed(t, c, "bootstrap", key, map[string]string{"new": "content"})
	if dir2 != dir {
		t.Errorf("second Commit = %q, want %q", dir2, dir)
	}
	if exists(filepath.Join(dir, "vmlinuz")) || readFile(t, filepath.Join(dir, "new")) != "content" {
		t.Errorf("second Commit did not replace the entry: %v", dirNames(t, dir))
	}
	if _, ok, reason := c.Lookup("bootstrap", key); !ok {
		t.Errorf("Lookup after replacing Commit missed: %s", reason)
	}
	if names := dirNames(t, filepath.Join(c.Dir, "tmp")); len(names) != 0 {
		t.Errorf("tmp holds %v after commits", names)
	}
}

func TestLookupPartialEntry(t *testing.T) {
	c := openCache(t, t.TempDir())
	key := Key("partial")
	entry := filepath.Join(c.Dir, "bootstrap", key)
	writeTree(t, entry, map[string]string{"vmlinuz": "half a kern"})

	dir, ok, reason := c.Lookup("bootstrap", key)
	if ok || dir != "" {
		t.Fatalf("Lookup of a partial entry = %q, %v; want a miss", dir, ok)
	}
	for _, w := range []string{"damaged", "no manifest", "interrupted"} {
		if !strings.Contains(reason, w) {
			t.Errorf("reason %q does not contain %q", reason, w)
		}
	}
	if exists(entry) {
		t.Error("partial entry was not removed")
	}
	if _, ok, reason := c.Lookup("bootstrap", key); ok || reason != "not cached" {
		t.Errorf("Lookup after removal = %v, %q; want a miss, \"not cached\"", ok, reason)
	}
}

func TestLookupDamagedEntry(t *testing.T) {
	files := map[string]string{
		"a":       "hello world",
		"sub/b":   "bbb",
		"sub/c/":  "",
		"link":    "->a",
		"zz-last": "z",
	}
	tests := []struct {
		name   string
		damage func(dir string) error
		want   string // in the reason
	}{
		{"byte modified", func(d string) error {
			return os.WriteFile(filepath.Join(d, "a"), []byte("hello World"), 0o644)
		}, "a differs"},
		{"byte modified, same size and time", func(d string) error {
			p := filepath.Join(d, "sub/b")
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte("bbc"), 0o644); err != nil {
				return err
			}
			return os.Chtimes(p, fi.ModTime(), fi.ModTime())
		}, "sub/b differs"},
		{"file truncated", func(d string) error { return os.Truncate(filepath.Join(d, "zz-last"), 0) }, "zz-last differs"},
		{"file added", func(d string) error {
			return os.WriteFile(filepath.Join(d, "sub/extra"), []byte("x"), 0o644)
		}, "manifest lists"},
		{"folder added", func(d string) error { return os.Mkdir(filepath.Join(d, "newdir"), 0o755) }, "manifest lists"},
		{"file removed", func(d string) error { return os.Remove(filepath.Join(d, "sub/b")) }, "manifest lists"},
		{"file renamed", func(d string) error {
			return os.Rename(filepath.Join(d, "zz-last"), filepath.Join(d, "zz-moved"))
		}, "zz-moved differs"},
		{"mode changed", func(d string) error { return os.Chmod(filepath.Join(d, "a"), 0o755) }, "a differs"},
		{"link retargeted", func(d string) error {
			if err := os.Remove(filepath.Join(d, "link")); err != nil {
				return err
			}
			return os.Symlink("sub/b", filepath.Join(d, "link"))
		}, "link differs"},
		{"manifest garbled", func(d string) error {
			return os.WriteFile(filepath.Join(d, manifestName), []byte("{not json"), 0o644)
		}, "unreadable manifest"},
		{"manifest removed", func(d string) error { return os.Remove(filepath.Join(d, manifestName)) }, "no manifest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := openCache(t, t.TempDir())
			key := Key(tc.name)
			dir := committed(t, c, "layer", key, files)
			if _, ok, reason := c.Lookup("layer", key); !ok {
				t.Fatalf("Lookup of the intact entry missed: %s", reason)
			}
			if err := tc.damage(dir); err != nil {
				t.Fatal(err)
			}
			got, ok, reason := c.Lookup("layer", key)
			if ok || got != "" {
				t.Fatalf("Lookup of a damaged entry hit: %q", got)
			}
			if !strings.Contains(reason, "damaged") || !strings.Contains(reason, tc.want) {
				t.Errorf("reason %q does not say damaged and %q", reason, tc.want)
			}
			if exists(dir) {
				t.Error("damaged entry was not removed")
			}
		})
	}
}

func TestLookupMarksUse(t *testing.T) {
	c := openCache(t, t.TempDir())
	dir := committed(t, c, "iso", "k", map[string]string{"f": "x"})
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(dir, old, old); err != nil {
		t.Fatal(err)
	}
	if _, ok, reason := c.Lookup("iso", "k"); !ok {
		t.Fatalf("Lookup missed: %s", reason)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(fi.ModTime()) > time.Hour {
		t.Errorf("Lookup left the entry's time at %v", fi.ModTime())
	}
}

func TestPrune(t *testing.T) {
	c := openCache(t, t.TempDir())
	now := time.Now()
	var paths []string // oldest first
	for i := range 5 {
		p := committed(t, c, "bootstrap", "k"+strconv.Itoa(i), map[string]string{"f": strconv.Itoa(i)})
		ts := now.Add(time.Duration(i-10) * time.Hour)
		if err := os.Chtimes(p, ts, ts); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	// A stray file in the stage folder is left alone.
	stray := filepath.Join(c.Dir, "bootstrap", "README")
	if err := os.WriteFile(stray, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := committed(t, c, "iso", "k0", map[string]string{"f": "iso"})

	c.Prune("bootstrap", 2, paths[0])

	want := map[string]bool{paths[0]: true, paths[1]: false, paths[2]: false, paths[3]: true, paths[4]: true}
	for p, keep := range want {
		if exists(p) != keep {
			t.Errorf("%s: exists %v, want %v", filepath.Base(p), exists(p), keep)
		}
	}
	if !exists(stray) {
		t.Error("Prune removed a file that is not an entry")
	}
	if !exists(other) {
		t.Error("Prune of bootstrap removed an entry of another stage")
	}

	// keep 0 with nothing in use empties the stage; a missing stage is fine.
	c.Prune("bootstrap", 0)
	for _, p := range paths {
		if exists(p) {
			t.Errorf("%s survived Prune(keep 0)", p)
		}
	}
	c.Prune("no-such-stage", 1)
}

func TestRemoveTreePlainDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "victim")
	writeTree(t, dir, map[string]string{"a/b/c": "x", "d/": "", "link": "->/etc"})
	if os.Geteuid() == 0 {
		// root deletes below a read-only folder too.
		if err := os.Chmod(filepath.Join(dir, "a", "b"), 0o500); err != nil {
			t.Fatal(err)
		}
	}
	if m := mountsUnder(dir); len(m) != 0 {
		t.Fatalf("mountsUnder(%s) = %v on a plain folder", dir, m)
	}
	if err := removeTree(dir); err != nil {
		t.Fatalf("removeTree: %v", err)
	}
	if exists(dir) {
		t.Error("folder still exists")
	}
	if !exists("/etc/passwd") {
		t.Fatal("removeTree followed a symbolic link")
	}
	if err := removeTree(dir); err != nil {
		t.Errorf("removeTree of a missing folder: %v", err)
	}
}

func TestRemoveTreeDetachesMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	dir := filepath.Join(t.TempDir(), "root")
	mp := filepath.Join(dir, "dev")
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mp, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(mp, "inside"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(dir); !slices.Equal(m, []string{mp}) {
		t.Fatalf("mountsUnder = %v, want [%s]", m, mp)
	}
	if err := removeTree(dir); err != nil {
		t.Fatalf("removeTree: %v", err)
	}
	if exists(dir) {
		t.Error("folder still exists")
	}
	if m := mountsUnder(dir); len(m) != 0 {
		t.Errorf("still mounted: %v", m)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:              "/plain",
		`/with\040space`:      "/with space",
		`/tab\011and\012nl`:   "/tab\tand\nnl",
		`/back\134slash\040x`: `/back\slash x`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.txt")
	if err := writeFileAtomic(p, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, p); got != "one\n" {
		t.Errorf("content = %q", got)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %o, want 600", fi.Mode().Perm())
	}
	// Overwrite, with another mode (not limited by the umask).
	if err := writeFileAtomic(p, []byte("two\n"), 0o664); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, p); got != "two\n" {
		t.Errorf("content after overwrite = %q", got)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o664 {
		t.Errorf("mode after overwrite = %o, want 664", fi.Mode().Perm())
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"out.txt"}) {
		t.Errorf("folder holds %v, want only out.txt (no temporary files)", names)
	}
	// A failure (folder missing) leaves nothing behind either.
	if err := writeFileAtomic(filepath.Join(dir, "missing", "x"), []byte("x"), 0o644); err == nil {
		t.Error("writeFileAtomic into a missing folder succeeded")
	}
	// Writing over a folder fails and leaves no temporary file.
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "adir"), []byte("x"), 0o644); err == nil {
		t.Error("writeFileAtomic over a folder succeeded")
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"adir", "out.txt"}) {
		t.Errorf("folder holds %v after a failed write", names)
	}
}

// TestPublish: publish makes the output folder and links the file there
// (atomicfile.Link, tested with its own package, does the rest).
func TestPublish(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "cache", "clusterdebian.iso")
	writeTree(t, dir, map[string]string{"cache/clusterdebian.iso": "new image"})
	dst := filepath.Join(dir, "out", "netboot", "clusterdebian.iso")
	if err := publish(src, dst); err != nil {
		t.Fatalf("publish: %v", err)
	}
	sfi, _ := os.Stat(src)
	dfi, err := os.Stat(dst)
	if err != nil || !os.SameFile(sfi, dfi) {
		t.Errorf("publish on one file system did not hard-link: %v", err)
	}
	if err := publish(filepath.Join(dir, "missing"), dst); err == nil {
		t.Error("publish of a missing source succeeded")
	}
}

func TestHashTree(t *testing.T) {
	files := map[string]string{
		"etc/motd":      "hello",
		"bin/tool":      "#!/bin/sh\n",
		"empty/":        "",
		"etc/localtime": "->/usr/share/zoneinfo/UTC",
	}
	mk := func(t *testing.T) string {
		dir := t.TempDir()
		writeTree(t, dir, files)
		return dir
	}
	base, err := hashTree(mk(t))
	if err != nil {
		t.Fatal(err)
	}
	if same, _ := hashTree(mk(t)); same != base {
		t.Errorf("two identical trees hash differently: %s, %s", base, same)
	}
	if h, err := hashTree(""); h != "" || err != nil {
		t.Errorf(`hashTree("") = %q, %v; want "", nil`, h, err)
	}
	if _, err := hashTree(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("hashTree of a missing folder succeeded")
	}

	changes := []struct {
		name   string
		change func(dir string) error
	}{
		{"content", func(d string) error { return os.WriteFile(filepath.Join(d, "etc/motd"), []byte("hellO"), 0o644) }},
		{"name", func(d string) error { return os.Rename(filepath.Join(d, "etc/motd"), filepath.Join(d, "etc/motd2")) }},
		{"folder name", func(d string) error { return os.Rename(filepath.Join(d, "empty"), filepath.Join(d, "vide")) }},
		{"file mode", func(d string) error { return os.Chmod(filepath.Join(d, "bin/tool"), 0o755) }},
		{"folder mode", func(d string) error { return os.Chmod(filepath.Join(d, "empty"), 0o700) }},
		{"link target", func(d string) error {
			os.Remove(filepath.Join(d, "etc/localtime"))
			return os.Symlink("/usr/share/zoneinfo/CET", filepath.Join(d, "etc/localtime"))
		}},
		{"file added", func(d string) error { return os.WriteFile(filepath.Join(d, "new"), nil, 0o644) }},
		{"empty folder added", func(d string) error { return os.Mkdir(filepath.Join(d, "new"), 0o755) }},
		{"file removed", func(d string) error { return os.Remove(filepath.Join(d, "bin/tool")) }},
	}
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			d := mk(t)
			if err := tc.change(d); err != nil {
				t.Fatal(err)
			}
			h, err := hashTree(d)
			if err != nil {
				t.Fatal(err)
			}
			if h == base {
				t.Errorf("hash unchanged after a %s change", tc.name)
			}
		})
	}

	t.Run("ownership does not count", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to chown")
		}
		d := mk(t)
		for _, p := range []string{"", "etc", "etc/motd", "bin/tool", "empty"} {
			if err := os.Chown(filepath.Join(d, p), 1234, 5678); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Lchown(filepath.Join(d, "etc/localtime"), 1234, 5678); err != nil {
			t.Fatal(err)
		}
		// Times do not count either.
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(filepath.Join(d, "etc/motd"), old, old); err != nil {
			t.Fatal(err)
		}
		if h, _ := hashTree(d); h != base {
			t.Errorf("hash changed with ownership or times only: %s, want %s", h, base)
		}
	})
}

func TestCopyTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	src := t.TempDir()
	writeTree(t, src, map[string]string{
		"etc/issue":          "Welcome\n",
		"etc/secret":         "s",
		"etc/private/":       "",
		"usr/local/bin/tool": "#!/bin/sh\n",
		"usr/local/bin/t":    "->tool",
		"abs-link":           "->/nonexistent/target",
	})
	for p, m := range map[string]os.FileMode{
		"etc/secret": 0o600, "usr/local/bin/tool": 0o755, "etc/private": 0o700, "etc": 0o700, ".": 0o700,
	} {
		if err := os.Chmod(filepath.Join(src, p), m); err != nil {
			t.Fatal(err)
		}
	}

	dst := t.TempDir()
	if err := os.Chmod(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	// An existing etc with its usual mode, and files to be replaced.
	writeTree(t, dst, map[string]string{
		"etc/issue": "old\n",
		"abs-link":  "->old",
	})
	if err := os.Chmod(filepath.Join(dst, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}

	const uid, gid = 1234, 5678
	if err := copyTree(src, dst, uid, gid); err != nil {
		t.Fatalf("copyTree: %v", err)
	}

	modes := map[string]os.FileMode{
		".":                  0o755 | os.ModeDir, // existing: kept
		"etc":                0o755 | os.ModeDir, // existing: kept
		"etc/private":        0o700 | os.ModeDir,
		"etc/secret":         0o600,
		"etc/issue":          0o644,
		"usr":                0o755 | os.ModeDir,
		"usr/local/bin/tool": 0o755,
		"usr/local/bin/t":    0o777 | os.ModeSymlink,
	}
	for p, want := range modes {
		fi, err := os.Lstat(filepath.Join(dst, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	if got := readFile(t, filepath.Join(dst, "etc/issue")); got != "Welcome\n" {
		t.Errorf("etc/issue = %q, want the source's content", got)
	}
	for link, want := range map[string]string{"usr/local/bin/t": "tool", "abs-link": "/nonexistent/target"} {
		if got, err := os.Readlink(filepath.Join(dst, link)); err != nil || got != want {
			t.Errorf("%s -> %q (%v), want %q", link, got, err, want)
		}
	}
	// New files, folders and links belong to uid:gid.
	for _, p := range []string{"etc/private", "etc/secret", "etc/issue", "usr", "usr/local/bin/tool", "usr/local/bin/t", "abs-link"} {
		fi, err := os.Lstat(filepath.Join(dst, p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
	}
	// The existing folders keep their owner too.
	for _, p := range []string{".", "etc"} {
		fi, _ := os.Lstat(filepath.Join(dst, p))
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
			t.Errorf("existing folder %s now owned by %d", p, st.Uid)
		}
	}

	// Into a destination that does not exist yet, the root takes src's mode.
	fresh := filepath.Join(t.TempDir(), "fresh")
	if err := copyTree(src, fresh, 0, 0); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o700 {
		t.Errorf("new destination mode %o, want 700", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Join(fresh, "etc")); fi.Mode().Perm() != 0o700 {
		t.Errorf("new etc mode %o, want 700 like the source", fi.Mode().Perm())
	}
}

func TestCopyTreeRejectsSpecialFiles(t *testing.T) {
	src := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	err := copyTree(src, t.TempDir(), os.Getuid(), os.Getgid())
	if err == nil || !strings.Contains(err.Error(), "fifo") {
		t.Errorf("copyTree with a FIFO = %v, want an error naming it", err)
	}
}

func TestRequireSpace(t *testing.T) {
	dir := t.TempDir()
	if err := requireSpace(dir, 0, "nothing"); err != nil {
		t.Errorf("requireSpace(0) = %v", err)
	}
	err := requireSpace(dir, 1<<62, "the universe")
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("requireSpace(huge) = %v, want ErrNoSpace", err)
	}
	for _, w := range []string{dir, "the universe", "GiB"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	if err := requireSpace(filepath.Join(dir, "missing"), 0, "x"); err == nil {
		t.Error("requireSpace on a missing folder succeeded")
	}
}
