// Package atomicfile replaces files through a temporary file in the same
// folder and a rename, so that a reader (another node over NFS, sshd, the
// next start of a daemon) sees the old content or the new, never a part.
// It writes both data held in memory (Write and its variants) and copies of
// other files (Copy, Link). A new file is made with mode 0600 and only then given
// its mode, so a secret is never readable by others on its way.
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Write replaces path with data and mode, creating its folder if needed. It
// does not fsync: most of what ClusterDebian writes lives in RAM, and against
// a crashed process the rename is what counts.
func Write(path string, data []byte, mode fs.FileMode) error {
	return replace(path, spec{mode: mode, uid: -1, gid: -1, mkdir: true}, bytes.NewReader(data))
}

// WriteSync is Write, with the data on disk before the rename, for files
// that must survive a power cut (the build cache). The folder must exist: a
// missing one is the caller's mistake, not something to paper over.
func WriteSync(path string, data []byte, mode fs.FileMode) error {
	return replace(path, spec{mode: mode, uid: -1, gid: -1, sync: true}, bytes.NewReader(data))
}

// WriteDurable is WriteSync that also syncs the folder after the rename, so
// that after a power cut path holds the new content, not the old: for state
// whose loss would hand something out twice (the DHCP leases). Like Write,
// it creates the folder if needed. An error from syncing the folder is
// returned, with the new file already in place.
func WriteDurable(path string, data []byte, mode fs.FileMode) error {
	return replace(path, spec{mode: mode, uid: -1, gid: -1, mkdir: true, sync: true, syncDir: true}, bytes.NewReader(data))
}

// WriteOwned is WriteSync for a file owned by uid and gid (-1 keeps the
// caller's), so that a user's key is never briefly root's or world-readable.
func WriteOwned(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	return replace(path, spec{mode: mode, uid: uid, gid: gid, sync: true}, bytes.NewReader(data))
}

// CopyOptions say how Copy makes the copy. The zero value copies src's
// permission bits, gives the copy the current time and does not sync.
type CopyOptions struct {
	// Mode is the copy's permission bits; 0 takes src's.
	Mode fs.FileMode
	// KeepTime gives the copy src's modification time (and access time),
	// so that a later comparison by size and time finds it unchanged.
	KeepTime bool
	// Sync puts the data on disk before the rename.
	Sync bool
}

// Copy replaces dst with a copy of the regular file src, whole or not at
// all: a reader of dst (a node fetching a boot file, a build reading a
// layer) sees the old file or the new, never half of one, and a failed copy
// leaves dst as it was. The folder of dst must exist. Errors name the file
// that failed.
func Copy(src, dst string, o CopyOptions) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("copying %s: not a regular file", src)
	}
	s := spec{mode: o.Mode, uid: -1, gid: -1, sync: o.Sync}
	if s.mode == 0 {
		s.mode = fi.Mode().Perm()
	}
	if o.KeepTime {
		s.mtime = fi.ModTime()
	}
	if err := replace(dst, s, in); err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	return nil
}

// Link replaces dst with a hard link to src, made under a temporary name and
// renamed into place: instant, and no extra space. Where no link can be made
// (src and dst on different file systems) it copies instead, as Copy with
// src's mode. The folder of dst must exist.
func Link(src, dst string) error {
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-"+strconv.FormatUint(rand.Uint64(), 36))
	if err := os.Link(src, tmp); err != nil {
		return Copy(src, dst, CopyOptions{})
	}
	err := os.Rename(tmp, dst)
	os.Remove(tmp) // rename(2) does nothing when dst already is a link to src
	return err
}

// spec is how replace makes the new file.
type spec struct {
	mode     fs.FileMode
	uid, gid int       // -1 keeps the caller's
	mkdir    bool      // create the folder first
	sync     bool      // data on disk before the rename
	syncDir  bool      // the folder synced after the rename
	mtime    time.Time // set when not zero
}

// replace writes what content yields to a temporary file beside path and
// renames it over path. The temporary file is created with mode 0600 and
// only then widened to s.mode, so a secret is never readable by others.
func replace(path string, s spec, content io.Reader) error {
	dir := filepath.Dir(path)
	if s.mkdir {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(s.mode); err != nil {
		return err
	}
	if s.uid >= 0 || s.gid >= 0 {
		if err := tmp.Chown(s.uid, s.gid); err != nil {
			return err
		}
	}
	if _, err := io.Copy(tmp, content); err != nil {
		return err
	}
	if s.sync {
		if err := tmp.Sync(); err != nil {
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if !s.mtime.IsZero() {
		if err := os.Chtimes(name, s.mtime, s.mtime); err != nil {
			return err
		}
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	renamed = true
	if s.syncDir {
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}
	return nil
}

// SetAside renames a damaged file to <path>.corrupt-<UTC time, e.g.
// 20260130T071500Z> beside it and returns the new path, so that a daemon can
// start afresh and the bad content stays for a person to look at. A rename
// needs no free space, so it works on a full disk too. A second file set
// aside in the same second gets a numeric suffix rather than replacing the
// first.
func SetAside(path string, now time.Time) (string, error) {
	base := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	dst := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = base + "." + strconv.Itoa(i)
	}
	if err := os.Rename(path, dst); err != nil {
		return "", fmt.Errorf("setting aside damaged %s: %w", path, err)
	}
	return dst, nil
}
