// Package atomicfile replaces files through a temporary file in the same
// folder and a rename, so that a reader (another node over NFS, sshd, the
// next start of a daemon) sees the old content or the new, never a part.
package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data and mode, creating its folder if needed. It
// does not fsync: most of what ClusterDebian writes lives in RAM, and against
// a crashed process the rename is what counts.
func Write(path string, data []byte, mode fs.FileMode) error {
	return write(path, data, mode, -1, -1, false, true)
}

// WriteSync is Write, with the data on disk before the rename, for files
// that must survive a power cut (the build cache). The folder must exist: a
// missing one is the caller's mistake, not something to paper over.
func WriteSync(path string, data []byte, mode fs.FileMode) error {
	return write(path, data, mode, -1, -1, true, false)
}

// WriteOwned is WriteSync for a file owned by uid and gid (-1 keeps the
// caller's), so that a user's key is never briefly root's or world-readable.
func WriteOwned(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	return write(path, data, mode, uid, gid, true, false)
}

func write(path string, data []byte, mode fs.FileMode, uid, gid int, sync, mkdir bool) error {
	dir := filepath.Dir(path)
	if mkdir {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if uid >= 0 || gid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			return err
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if sync {
		if err := tmp.Sync(); err != nil {
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		done = true
		return err
	}
	done = true
	return nil
}
