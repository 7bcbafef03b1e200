// Package bootfs is the head's boot-file tree: the one resolver through which
// both TFTP (internal/netboot/tftp) and HTTP (internal/netboot/httpboot)
// serve files, so that both follow one policy for which request names reach
// which files.
//
// A Tree is an fs.FS over one or more folders (roots), searched in order.
// Files are opened through os.Root, so a name can never lead out of the root
// it was found in, not even through a symbolic link swapped in while a
// request is served. The one symlink policy:
//
//   - a link may point anywhere inside its own root, by a relative or an
//     absolute target;
//   - a link may point into one of the allowed folders given to New (Debian's
//     /usr/lib/ipxe/ipxe.efi is a link to /boot/ipxe.efi);
//   - any other link is refused with ErrOutside, and the search stops there:
//     a later root is not asked instead, so what is served does not depend on
//     where a stray link points.
//
// Only regular files are served: folders, devices and FIFOs are "not found",
// and nothing is ever listed.
package bootfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// MaxNameLen bounds the names a Tree accepts, in bytes. A TFTP read request
// fits in one 512-byte datagram and boot files have short names, so no
// honest client sends more; the bound keeps fuzzing and logs sane.
const MaxNameLen = 1024

// ErrOutside is wrapped by Open's error when a name resolves, through a
// symbolic link, to a file outside its root and outside the allowed folders.
var ErrOutside = errors.New("file resolves outside the boot tree")

// Tree is a read-only tree of boot files; see the package comment for its
// policy. It holds folder names, not open folders: each Open opens its root
// afresh, so a folder that appears later, or is replaced by a rename (an
// image rebuild), is served at once.
type Tree struct {
	roots []string
	allow []string
}

// New returns the tree of roots, searched in order: the first root that
// holds a name serves it. allow lists folders outside the roots that a
// symbolic link inside a root may point into. Relative folder names are
// made absolute here. Roots need not exist: a missing root holds nothing.
func New(roots []string, allow ...string) (*Tree, error) {
	t := &Tree{}
	for _, list := range []struct {
		in  []string
		out *[]string
	}{{roots, &t.roots}, {allow, &t.allow}} {
		for _, d := range list.in {
			abs, err := filepath.Abs(d)
			if err != nil {
				return nil, fmt.Errorf("bootfs: folder %q: %w", d, err)
			}
			*list.out = append(*list.out, abs)
		}
	}
	return t, nil
}

// Roots returns the tree's folders, in search order.
func (t *Tree) Roots() []string { return append([]string(nil), t.roots...) }

// String lists the roots, for logs.
func (t *Tree) String() string { return strings.Join(t.roots, ":") }

// ValidName reports whether name is one a Tree may resolve: an fs.ValidPath
// (slash-separated, relative, without empty, "." or ".." elements) of at
// most MaxNameLen bytes, without NUL bytes or backslashes. The protocols
// turn what a client sends into such a name first.
func ValidName(name string) bool {
	return len(name) <= MaxNameLen && fs.ValidPath(name) && !strings.ContainsAny(name, "\x00\\")
}

// Open opens the regular file name (see ValidName) from the first root that
// holds it. The file is an *os.File. Errors are *fs.PathError wrapping:
//
//   - fs.ErrInvalid for a name that is not ValidName;
//   - ErrOutside for a symbolic link that leads out (see the package comment);
//   - fs.ErrPermission for a file the server may not read;
//   - fs.ErrNotExist for anything else: no root holds the name, it is not a
//     regular file, or its links loop.
func (t *Tree) Open(name string) (fs.File, error) {
	f, err := t.open(name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return f, nil
}

func (t *Tree) open(name string) (*os.File, error) {
	if !ValidName(name) {
		return nil, fs.ErrInvalid
	}
	for _, root := range t.roots {
		f, err := openIn(root, name)
		if err == nil {
			return regular(f)
		}
		// os.Root refused, or the file is missing: find out which. The slow
		// path resolves the links by hand, for links that os.Root will not
		// follow but the policy allows (absolute ones inside the root, and
		// those into an allowed folder).
		base, rel, err := t.resolve(root, name)
		switch {
		case errors.Is(err, errMissing):
			continue
		case err != nil:
			return nil, err
		}
		f, err = openIn(base, rel)
		if err != nil {
			return nil, classify(err)
		}
		return regular(f)
	}
	return nil, fs.ErrNotExist
}

// errMissing means "this root does not hold the name": try the next root.
var errMissing = errors.New("not in this root")

// resolve follows name's links inside root and returns the symlink-free
// folder the file lies in (the root itself, or an allowed folder) and its
// path below that folder.
func (t *Tree) resolve(root, name string) (base, rel string, err error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", "", errMissing // a missing root holds nothing
	}
	p, err := filepath.EvalSymlinks(filepath.Join(realRoot, filepath.FromSlash(name)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return "", "", errMissing
		}
		// ELOOP, EACCES and the like: refuse rather than fall through to a
		// later root, so what is served does not depend on such errors.
		return "", "", classify(err)
	}
	if within(realRoot, p) {
		base = realRoot
	} else {
		for _, a := range t.allow {
			if ra, err := filepath.EvalSymlinks(a); err == nil && within(ra, p) {
				base = ra
				break
			}
		}
	}
	if base == "" {
		return "", "", ErrOutside
	}
	rel, err = filepath.Rel(base, p)
	if err != nil {
		return "", "", ErrOutside
	}
	return base, rel, nil
}

// openIn opens name through an os.Root on dir.
func openIn(dir, name string) (*os.File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Open(name)
}

// regular returns f if it is a regular file, and closes it otherwise.
func regular(f *os.File) (*os.File, error) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fs.ErrNotExist
	}
	return f, nil
}

// classify reduces an open error to the kinds Open promises.
func classify(err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fs.ErrPermission
	}
	return fmt.Errorf("%w: %v", fs.ErrNotExist, err)
}

// within reports whether p lies strictly below dir; both must be clean,
// absolute and symlink-free.
func within(dir, p string) bool {
	r, err := filepath.Rel(dir, p)
	if err != nil || r == "." || filepath.IsAbs(r) {
		return false
	}
	return r != ".." && !strings.HasPrefix(r, ".."+string(filepath.Separator))
}
