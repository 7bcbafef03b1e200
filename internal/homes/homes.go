// Package homes walks the home folders of a root file system: root's
// (root/root) and every folder in root/home, for the code that puts a file
// into each user's home (the host lists, the SSH keys). A home's owner is
// taken as its user, so nothing depends on the passwd file of the root.
package homes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Home is one home folder.
type Home struct {
	Path     string // the folder, under the root given to Each
	UID, GID int    // its owner, taken as the user's
}

// Each calls fn for root/root and every folder in root/home, in that order
// (root/home sorted by name). It passes over what is not a home: a missing
// root/root, a file or a symbolic link (never followed: the callers run as
// root inside users' folders), and lost+found. A problem with one home does
// not stop the others: the errors of fn (as fn returned them) and of reading
// the homes are returned together. root/home missing means root's home
// alone; root/home unreadable is an error before any call.
func Each(root string, fn func(Home) error) error {
	paths := []string{filepath.Join(root, "root")}
	entries, err := os.ReadDir(filepath.Join(root, "home"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if e.Name() != "lost+found" {
			paths = append(paths, filepath.Join(root, "home", e.Name()))
		}
	}
	var errs []error
	for _, p := range paths {
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		case !fi.IsDir():
			continue // a stray file or a link; not a home
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: no owner information", p))
			continue
		}
		if err := fn(Home{Path: p, UID: int(st.Uid), GID: int(st.Gid)}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
