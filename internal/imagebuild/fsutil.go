package imagebuild

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
)

// mountsUnder returns the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// removeTree deletes dir, first detaching anything mounted below it. It refuses
// to delete while a mount remains: deleting through a bind mount of /dev or
// /proc would damage the host.
func removeTree(dir string) error {
	for _, mp := range mountsUnder(dir) {
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	if left := mountsUnder(dir); len(left) > 0 {
		return fmt.Errorf("refusing to delete %s: still mounted: %s", dir, strings.Join(left, ", "))
	}
	return os.RemoveAll(dir)
}

// writeFileAtomic writes data through a temporary file and a rename, synced
// first: cache manifests and credentials must survive a power cut whole.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	return atomicfile.WriteSync(path, data, mode)
}

// publish puts src at dst atomically, creating the folder: a hard link when
// both are on one file system (instant, no extra space), else a copy.
func publish(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return atomicfile.Link(src, dst)
}

// copyTree copies the folder src into dst: regular files, folders and symbolic
// links, keeping modes. Files are owned by uid:gid.
func copyTree(src, dst string, uid, gid int) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if _, err := os.Lstat(target); err == nil {
				// An existing folder keeps its mode and owner: an overlay's
				// etc/ made with a private umask must not close /etc.
				return nil
			}
			if err := os.MkdirAll(target, fi.Mode().Perm()|0o700); err != nil {
				return err
			}
			if err := os.Chmod(target, fi.Mode().Perm()); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			os.Remove(target)
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			os.Remove(target)
			if err := atomicfile.Copy(path, target, atomicfile.CopyOptions{Mode: fi.Mode().Perm()}); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: only regular files, folders and links can be copied", path)
		}
		return os.Lchown(target, uid, gid)
	})
}

// hashTree fingerprints a folder's names, modes, link targets and contents.
func hashTree(dir string) (string, error) {
	if dir == "" {
		return "", nil
	}
	files, err := scanTree(dir)
	if err != nil {
		return "", err
	}
	// Ownership on the build host does not reach the image (copyTree sets it).
	for i := range files {
		files[i].UID, files[i].GID = 0, 0
	}
	return Key(files), nil
}

// freeBytes returns the space available to root in the file system of dir.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bfree * uint64(st.Bsize), nil
}

// ErrNoSpace is returned when a stage would not fit on disk.
var ErrNoSpace = errors.New("not enough disk space")

func requireSpace(dir string, need uint64, what string) error {
	free, err := freeBytes(dir)
	if err != nil {
		return err
	}
	if free < need {
		return fmt.Errorf("%w in %s for %s: %.1f GiB free, about %.1f GiB needed", ErrNoSpace, dir, what,
			float64(free)/(1<<30), float64(need)/(1<<30))
	}
	return nil
}
