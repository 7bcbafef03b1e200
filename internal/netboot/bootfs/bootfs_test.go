package bootfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fixture is two roots, an allowed folder outside them (like Debian's /boot)
// and a secret outside everything, with links of every kind.
type fixture struct {
	root, root2, allowed, outside string
	secret                        []byte
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{
		root:    filepath.Join(base, "root"),
		root2:   filepath.Join(base, "root2"),
		allowed: filepath.Join(base, "bootpart"),
		outside: filepath.Join(base, "outside"),
		secret:  []byte("TOP SECRET: this must never leave the head\n"),
	}
	files := map[string]string{
		"root/undionly.kpxe":        "undionly",
		"root/sub/dir/ipxe.efi":     "nested",
		"root/has space":            "spaced",
		"root/%2e%2e":               "literal name",
		"root2/undionly.kpxe":       "shadowed",
		"root2/only-in-2":           "second root",
		"bootpart/real.efi":         "allowed target",
		"outside/secret":            string(f.secret),
		"root/emptydir/.keep-empty": "",
	}
	for rel, content := range files {
		p := filepath.Join(base, filepath.FromSlash(rel))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		if strings.HasSuffix(rel, ".keep-empty") {
			continue
		}
		must(t, os.WriteFile(p, []byte(content), 0o644))
	}
	links := map[string]string{
		"root/alias.kpxe":    "undionly.kpxe",                           // inside, relative
		"root/sub/up.kpxe":   "../undionly.kpxe",                        // inside, through ..
		"root/abs.kpxe":      filepath.Join(f.root, "undionly.kpxe"),    // inside, absolute
		"root/passwd-link":   "/etc/passwd",                             // out, absolute
		"root/secret-link":   filepath.Join(f.outside, "secret"),        // out, to a file
		"root/outdir":        "../outside",                              // out, to a folder
		"root/etc":           "/etc",                                    // out, to a system folder
		"root/cross":         "../root2/only-in-2",                      // into the other root: still out
		"root/dangling":      "nowhere",                                 // nothing there
		"root/loop1":         "loop2",                                   // a loop
		"root/loop2":         "loop1",                                   //
		"root/devnull":       "/dev/null",                               // out, and no regular file
		"root2/linked.efi":   filepath.Join(f.allowed, "real.efi"),      // into the allowed folder
		"root2/linked-up":    "../bootpart/real.efi",                    // same, relative
		"root2/allowed-dir":  f.allowed,                                 // an allowed folder as a whole
		"root2/beside-allow": filepath.Join(f.allowed, "..", "outside"), // past the allowed folder
	}
	for rel, target := range links {
		must(t, os.Symlink(target, filepath.Join(base, filepath.FromSlash(rel))))
	}
	return f
}

func (f *fixture) tree(t testing.TB, allow ...string) *Tree {
	t.Helper()
	tr, err := New([]string{f.root, f.root2}, allow...)
	must(t, err)
	return tr
}

// read opens name and returns its content, or the error.
func read(tr *Tree, name string) (string, error) {
	fl, err := tr.Open(name)
	if err != nil {
		return "", err
	}
	defer fl.Close()
	b, err := io.ReadAll(fl)
	return string(b), err
}

// TestEscapes is the tree's path-escape table: every way a request name
// could lead out of the roots, and the names that must keep working. The
// protocols run their own spellings of these through TFTP and HTTP.
func TestEscapes(t *testing.T) {
	f := newFixture(t)
	tr := f.tree(t, f.allowed)
	ok := map[string]string{
		"undionly.kpxe":        "undionly", // the first root wins
		"only-in-2":            "second root",
		"sub/dir/ipxe.efi":     "nested",
		"alias.kpxe":           "undionly",
		"sub/up.kpxe":          "undionly",
		"abs.kpxe":             "undionly",
		"has space":            "spaced",
		"%2e%2e":               "literal name", // names are not URL-decoded here
		"linked.efi":           "allowed target",
		"linked-up":            "allowed target",
		"allowed-dir/real.efi": "allowed target",
	}
	for name, want := range ok {
		if got, err := read(tr, name); err != nil || got != want {
			t.Errorf("Open(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	long := strings.Repeat("a", MaxNameLen+1)
	bad := map[string]error{
		"":                         fs.ErrInvalid,
		".":                        fs.ErrNotExist, // the root itself: a folder
		"/":                        fs.ErrInvalid,
		"/undionly.kpxe":           fs.ErrInvalid, // absolute
		"/etc/passwd":              fs.ErrInvalid,
		"..":                       fs.ErrInvalid,
		"../outside/secret":        fs.ErrInvalid,
		"sub/../../outside/secret": fs.ErrInvalid,
		"sub/../undionly.kpxe":     fs.ErrInvalid, // ".." is refused, not cleaned
		"./undionly.kpxe":          fs.ErrInvalid,
		"sub//dir/ipxe.efi":        fs.ErrInvalid,
		"sub/dir/":                 fs.ErrInvalid,
		`..\outside\secret`:        fs.ErrInvalid, // backslashes are never separators here
		`sub\dir\ipxe.efi`:         fs.ErrInvalid,
		"a\x00b":                   fs.ErrInvalid,
		"undionly.kpxe\x00":        fs.ErrInvalid,
		long:                       fs.ErrInvalid,
		"passwd-link":              ErrOutside,
		"secret-link":              ErrOutside,
		"outdir/secret":            ErrOutside,
		"etc/passwd":               ErrOutside,
		"cross":                    ErrOutside,
		"devnull":                  ErrOutside,
		"beside-allow/secret":      ErrOutside,
		"etc/shadow-missing":       fs.ErrNotExist, // dangling: nothing there to serve
		"dangling":                 fs.ErrNotExist,
		"loop1":                    fs.ErrNotExist,
		"emptydir":                 fs.ErrNotExist, // folders are not files
		"sub":                      fs.ErrNotExist,
		"nope":                     fs.ErrNotExist,
		"undionly.kpxe/x":          fs.ErrNotExist, // a file used as a folder
	}
	for name, want := range bad {
		got, err := read(tr, name)
		if !errors.Is(err, want) {
			t.Errorf("Open(%.40q) = %q, %v; want %v", name, got, err, want)
		}
		if strings.Contains(got, "SECRET") || strings.Contains(got, "root:") {
			t.Errorf("Open(%.40q) LEAKED a file outside the tree", name)
		}
		var pe *fs.PathError
		if !errors.As(err, &pe) || pe.Path != name {
			t.Errorf("Open(%.40q): error %v is not a *fs.PathError for the name", name, err)
		}
	}
	// The longest name accepted is still looked up.
	if _, err := read(tr, long[:MaxNameLen]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("name of MaxNameLen bytes: %v, want not found", err)
	}
}

// TestAllow: links into a folder are served only when it is allowed, and the
// allowance covers that folder only.
func TestAllow(t *testing.T) {
	f := newFixture(t)
	strict := f.tree(t)
	for _, name := range []string{"linked.efi", "linked-up", "allowed-dir/real.efi"} {
		if _, err := read(strict, name); !errors.Is(err, ErrOutside) {
			t.Errorf("without the allowance, Open(%q): %v, want ErrOutside", name, err)
		}
	}
	allowed := f.tree(t, f.allowed)
	for _, name := range []string{"secret-link", "outdir/secret", "passwd-link"} {
		if _, err := read(allowed, name); !errors.Is(err, ErrOutside) {
			t.Errorf("with an unrelated allowance, Open(%q): %v, want ErrOutside", name, err)
		}
	}
	// An allowed folder reached through a link of its own counts by its
	// real place.
	linkedAllow := filepath.Join(t.TempDir(), "boot")
	must(t, os.Symlink(f.allowed, linkedAllow))
	if got, err := read(f.tree(t, linkedAllow), "linked.efi"); err != nil || got != "allowed target" {
		t.Errorf("allowance named through a link: %q, %v", got, err)
	}
}

// TestRoots: a missing root holds nothing, a root given as a link is served,
// a root that appears or is replaced later is served at once.
func TestRoots(t *testing.T) {
	f := newFixture(t)
	gone := filepath.Join(f.root, "gone")
	tr, err := New([]string{gone, f.root})
	must(t, err)
	if got, err := read(tr, "undionly.kpxe"); err != nil || got != "undionly" {
		t.Errorf("missing first root: %q, %v", got, err)
	}
	empty, err := New(nil)
	must(t, err)
	if _, err := read(empty, "undionly.kpxe"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no roots: %v", err)
	}
	// A root that is a file holds nothing.
	fileRoot, err := New([]string{filepath.Join(f.root, "undionly.kpxe"), f.root2})
	must(t, err)
	if got, err := read(fileRoot, "only-in-2"); err != nil || got != "second root" {
		t.Errorf("file as first root: %q, %v", got, err)
	}

	linked := filepath.Join(t.TempDir(), "linked-root")
	must(t, os.Symlink(f.root, linked))
	lt, err := New([]string{linked})
	must(t, err)
	if got, err := read(lt, "abs.kpxe"); err != nil || got != "undionly" {
		t.Errorf("root named through a link: %q, %v", got, err)
	}

	base := t.TempDir()
	boot := filepath.Join(base, "netboot")
	rt, err := New([]string{boot})
	must(t, err)
	if _, err := read(rt, "vmlinuz"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("root missing: %v", err)
	}
	must(t, os.Mkdir(boot, 0o755))
	must(t, os.WriteFile(filepath.Join(boot, "vmlinuz"), []byte("old"), 0o644))
	if got, _ := read(rt, "vmlinuz"); got != "old" {
		t.Errorf("root appeared: %q", got)
	}
	next := filepath.Join(base, "netboot.new")
	must(t, os.Mkdir(next, 0o755))
	must(t, os.WriteFile(filepath.Join(next, "vmlinuz"), []byte("new"), 0o644))
	must(t, os.Rename(boot, filepath.Join(base, "netboot.old")))
	must(t, os.Rename(next, boot))
	if got, _ := read(rt, "vmlinuz"); got != "new" {
		t.Errorf("root replaced: %q", got)
	}

	rel, err := New([]string{"testdata-relative"})
	must(t, err)
	if r := rel.Roots(); len(r) != 1 || !filepath.IsAbs(r[0]) {
		t.Errorf("relative root kept as %q", r)
	}
}

// TestOSFile: the files are *os.File, so the HTTP server can hand them to
// sendfile(2), and they report their size.
func TestOSFile(t *testing.T) {
	f := newFixture(t)
	fl, err := f.tree(t, f.allowed).Open("linked.efi")
	must(t, err)
	defer fl.Close()
	if _, ok := fl.(*os.File); !ok {
		t.Errorf("Open returned %T, want *os.File", fl)
	}
	st, err := fl.Stat()
	if err != nil || st.Size() != int64(len("allowed target")) {
		t.Errorf("Stat: %v, %v", st, err)
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"undionly.kpxe": true, "sub/dir/ipxe.efi": true, ".": true, "a b": true,
		"": false, "/x": false, "x/": false, "a//b": false, "a/./b": false, "a/../b": false,
		`a\b`: false, "a\x00": false, strings.Repeat("a", MaxNameLen+1): false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%.20q) = %v, want %v", name, got, want)
		}
	}
}

// realPath is where an open file really lies, from /proc.
func realPath(t testing.TB, fl fs.File) string {
	t.Helper()
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(fl.(*os.File).Fd())))
	must(t, err)
	return p
}

// FuzzResolvePath: whatever the name, an opened file is a regular file
// strictly inside a root or the allowed folder, never the secret; and a name
// is refused as invalid exactly when ValidName says so.
func FuzzResolvePath(f *testing.F) {
	fx := newFixture(f)
	tr := fx.tree(f, fx.allowed)
	var dirs []string
	for _, d := range []string{fx.root, fx.root2, fx.allowed} {
		r, err := filepath.EvalSymlinks(d)
		must(f, err)
		dirs = append(dirs, r)
	}
	for _, s := range []string{
		"undionly.kpxe", "alias.kpxe", "abs.kpxe", "../etc/passwd", "/etc/passwd", `..\..\etc\passwd`,
		"passwd-link", "secret-link", "outdir/secret", "etc/passwd", "cross", "linked.efi", "allowed-dir/real.efi",
		"beside-allow/secret", "sub/dir/ipxe.efi", "only-in-2", "emptydir", "a\x00b", "....//secret",
		"%2e%2e", ".../outside/secret", "sub/up.kpxe", "loop1", "\u2025/secret",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		fl, err := tr.Open(name)
		if errors.Is(err, fs.ErrInvalid) != !ValidName(name) {
			t.Fatalf("Open(%q): %v, but ValidName = %v", name, err, ValidName(name))
		}
		if err != nil {
			if fl != nil {
				t.Fatalf("Open(%q): error %v with a file", name, err)
			}
			return
		}
		defer fl.Close()
		p := realPath(t, fl)
		inside := false
		for _, d := range dirs {
			inside = inside || within(d, p)
		}
		if !inside {
			t.Fatalf("Open(%q) opened %s, outside %v", name, p, dirs)
		}
		st, err := fl.Stat()
		if err != nil || !st.Mode().IsRegular() {
			t.Fatalf("Open(%q) opened %s, not a regular file (%v)", name, p, err)
		}
	})
}
