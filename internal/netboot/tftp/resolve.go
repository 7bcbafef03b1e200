package tftp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Errors returned by ResolvePath. The server maps them to TFTP error
// packets with fixed texts, so that a probing client learns nothing about
// the head's file system.
var (
	ErrBadName    = errors.New("invalid file name")
	ErrNotFound   = errors.New("file not found")
	ErrOutsideDir = errors.New("file resolves outside the served folders")
)

// maxNameLen bounds accepted names. An RRQ fits in one 512-byte datagram,
// so no honest client sends more; the bound keeps fuzzing and logs sane.
const maxNameLen = 1024

// cleanName turns a requested TFTP file name into a slash-separated path
// relative to a root, or fails. PXE ROMs vary: some send "/undionly.kpxe",
// Windows-derived ones send "boot\x86\file", so a leading slash means
// "relative to the root" and a backslash is a separator. Any ".." element
// is refused outright rather than cleaned away: no boot firmware needs it,
// and refusing it means no clever spelling can climb out of a root.
func cleanName(name string) (string, error) {
	if name == "" || len(name) > maxNameLen || strings.IndexByte(name, 0) >= 0 {
		return "", ErrBadName
	}
	name = strings.ReplaceAll(name, `\`, "/")
	parts := strings.Split(name, "/")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", ErrBadName
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return "", ErrBadName
	}
	return strings.Join(out, "/"), nil
}

// resolved says where a request landed: base is the (symlink-free) folder
// the file lies in — a root, or one of the allowed symlink targets — and rel
// the file's path below base. The server opens rel through an os.Root on
// base, so even a symlink swapped in after resolution cannot escape.
type resolved struct {
	base, rel, path string
}

// ResolvePath maps a requested TFTP file name to a regular file inside one
// of the roots, or returns an error. Roots are tried in order and the first
// one holding the name wins. Symlinks are followed, but the final file must
// lie inside the root it was found in; a symlink pointing elsewhere is an
// error (ErrOutsideDir), not a reason to try the next root. Exported for
// fuzzing and for callers that want to check a name without serving it.
func ResolvePath(roots []string, name string) (string, error) {
	r, err := resolve(roots, nil, name)
	if err != nil {
		return "", err
	}
	return r.path, nil
}

// resolve is ResolvePath plus allow: folders outside the roots that a
// symlink inside a root may point into. Debian needs that: its
// /usr/lib/ipxe/ipxe.efi is a symlink to /boot/ipxe.efi.
func resolve(roots, allow []string, name string) (resolved, error) {
	rel, err := cleanName(name)
	if err != nil {
		return resolved{}, err
	}
	for _, root := range roots {
		base, err := realDir(root)
		if err != nil {
			continue // a missing root holds nothing
		}
		p, err := filepath.EvalSymlinks(filepath.Join(base, filepath.FromSlash(rel)))
		if err != nil {
			if missing(err) {
				continue
			}
			// ELOOP, EACCES and the like: refuse rather than fall through
			// to a later root, so what is served does not depend on
			// transient errors.
			return resolved{}, fmt.Errorf("%w: %v", ErrNotFound, err)
		}
		home := ""
		if within(base, p) {
			home = base
		} else {
			for _, a := range allow {
				if ab, err := realDir(a); err == nil && within(ab, p) {
					home = ab
					break
				}
			}
		}
		if home == "" {
			return resolved{}, ErrOutsideDir
		}
		st, err := os.Stat(p)
		if err != nil {
			return resolved{}, fmt.Errorf("%w: %v", ErrNotFound, err)
		}
		if !st.Mode().IsRegular() {
			// Directories, devices and FIFOs are never served.
			return resolved{}, ErrNotFound
		}
		r, err := filepath.Rel(home, p)
		if err != nil {
			return resolved{}, ErrOutsideDir
		}
		return resolved{base: home, rel: r, path: p}, nil
	}
	return resolved{}, ErrNotFound
}

// realDir returns dir made absolute with symlinks resolved, so that
// containment can be checked by comparing resolved paths.
func realDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
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

// missing reports whether err means "no such file", including a path
// component that is a regular file (ENOTDIR).
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
