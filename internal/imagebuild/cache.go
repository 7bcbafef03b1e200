package imagebuild

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultCacheDir is where stage outputs are kept between builds: outside any
// source tree, so that a repository checkout never carries them.
const DefaultCacheDir = "/var/cache/clusterdebian"

// manifestName is written last into a finished cache entry. An entry without
// it, or whose files differ from it, is partial or damaged and is rebuilt.
const manifestName = ".manifest.json"

// Key derives a cache key from a stage's inputs. Any change to any input gives
// a different key.
func Key(parts ...any) string {
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, p := range parts {
		if err := enc.Encode(p); err != nil {
			panic(fmt.Sprintf("imagebuild.Key: %v", err))
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:24]
}

// Cache stores one folder of outputs per stage and key.
type Cache struct {
	Dir  string
	lock *os.File
}

// ErrCacheBusy is wrapped by OpenCache when another build holds the cache.
var ErrCacheBusy = errors.New("the build cache is in use")

// OpenCache creates the cache folder and takes its lock, so that two builds
// never write the same cache at once. It also clears what an interrupted build
// left in the cache's scratch folder.
func OpenCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, fmt.Errorf("cache folder %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(f.Name())
		f.Close()
		return nil, fmt.Errorf("%w: another clusterdebian build (pid %s) is using %s", ErrCacheBusy, strings.TrimSpace(string(holder)), dir)
	}
	f.Truncate(0)
	f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	c := &Cache{Dir: dir, lock: f}
	entries, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	for _, e := range entries {
		if err := removeTree(filepath.Join(dir, "tmp", e.Name())); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close releases the lock.
func (c *Cache) Close() {
	if c.lock != nil {
		syscall.Flock(int(c.lock.Fd()), syscall.LOCK_UN)
		c.lock.Close()
		c.lock = nil
	}
}

func (c *Cache) entryDir(stage, key string) string { return filepath.Join(c.Dir, stage, key) }

// Lookup returns the folder of a complete, intact entry. A damaged or partial
// entry is removed and reported as a miss, with the reason.
func (c *Cache) Lookup(stage, key string) (dir string, ok bool, reason string) {
	dir = c.entryDir(stage, key)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return "", false, "not cached"
	}
	if err := verifyManifest(dir); err != nil {
		removeTree(dir)
		return "", false, "cache entry damaged (" + err.Error() + "), rebuilding"
	}
	now := time.Now()
	os.Chtimes(dir, now, now) // most recently used, for pruning
	return dir, true, "cached"
}

// TempDir returns a new scratch folder inside the cache (same file system, so
// finished entries are renamed into place, never copied).
func (c *Cache) TempDir(prefix string) (string, error) {
	return os.MkdirTemp(filepath.Join(c.Dir, "tmp"), prefix+"-")
}

// Commit seals the scratch folder tmp as the entry for stage and key: it
// writes the manifest, then renames the folder into place in one step.
func (c *Cache) Commit(stage, key, tmp string) (string, error) {
	if err := writeManifest(tmp); err != nil {
		return "", fmt.Errorf("sealing %s cache entry: %w", stage, err)
	}
	dst := c.entryDir(stage, key)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if _, err := os.Stat(dst); err == nil {
		if err := removeTree(dst); err != nil {
			return "", err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// Prune keeps the newest keep entries of a stage (by last use), plus the ones
// in inUse, and removes the rest.
func (c *Cache) Prune(stage string, keep int, inUse ...string) {
	base := filepath.Join(c.Dir, stage)
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	type ent struct {
		path string
		mod  time.Time
	}
	var all []ent
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !e.IsDir() {
			continue
		}
		all = append(all, ent{filepath.Join(base, e.Name()), fi.ModTime()})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mod.After(all[j].mod) })
	for i, e := range all {
		used := false
		for _, u := range inUse {
			used = used || u == e.path
		}
		if i >= keep && !used {
			removeTree(e.path)
		}
	}
}

type manifestFile struct {
	Path   string `json:"path"`
	Mode   uint32 `json:"mode"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Link   string `json:"link,omitempty"`
}

type manifest struct {
	Created time.Time      `json:"created"`
	Files   []manifestFile `json:"files"`
}

func scanTree(dir string) ([]manifestFile, error) {
	var files []manifestFile
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == manifestName || rel == "." {
			return nil
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		mf := manifestFile{Path: rel, Mode: uint32(fi.Mode()), UID: st.Uid, GID: st.Gid}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			mf.Link, err = os.Readlink(path)
			if err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			mf.Size = fi.Size()
			mf.SHA256, err = hashFile(path)
			if err != nil {
				return err
			}
		}
		files = append(files, mf)
		return nil
	})
	return files, err
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeManifest(dir string) error {
	files, err := scanTree(dir)
	if err != nil {
		return err
	}
	data, err := json.Marshal(manifest{Created: time.Now().UTC(), Files: files})
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, manifestName), data, 0o644)
}

func verifyManifest(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return errors.New("no manifest: the build that made it was interrupted")
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("unreadable manifest: %v", err)
	}
	files, err := scanTree(dir)
	if err != nil {
		return err
	}
	if len(files) != len(m.Files) {
		return fmt.Errorf("%d files, manifest lists %d", len(files), len(m.Files))
	}
	for i, f := range files {
		if f != m.Files[i] {
			return fmt.Errorf("%s differs from the manifest", f.Path)
		}
	}
	return nil
}
