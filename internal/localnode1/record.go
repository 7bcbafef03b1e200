package localnode1

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Record is what localnode1 changed on the host, kept in RecordPath so that
// --remove undoes exactly that, and no more. It is saved before each change
// is made, so that a run interrupted halfway can still be removed.
type Record struct {
	Version   int    `json:"version"`
	Interface string `json:"interface"`
	// Address is the head's address with the subnet's prefix length.
	Address string `json:"address"`
	// Network is the tool that holds the interface configuration:
	// networkmanager, networkd, ifupdown or none.
	Network string `json:"network"`
	// Files are the files written, in order, each with its earlier content
	// when it had one.
	Files []FileRecord `json:"files"`
	// Dirs are folders that did not exist before: removed with what is
	// in them (the head's state, the boot files) or, for the shared
	// /etc folders, only when empty.
	Dirs []string `json:"dirs"`
	// Enabled are units that were not enabled before localnode1 enabled
	// them; --remove disables them again.
	Enabled []string `json:"enabled"`
	// Absent are files the head adds a block to that did not exist before:
	// removed when nothing else is left in them.
	Absent []string `json:"absent,omitempty"`
	// Packages were installed by localnode1; they stay on --remove.
	Packages []string `json:"packages,omitempty"`
}

// FileRecord is one file localnode1 (or the head it installed) writes.
type FileRecord struct {
	Path string `json:"path"`
	// Backup holds the file's earlier content (under BackupDir), "" when
	// the file did not exist.
	Backup string      `json:"backup,omitempty"`
	Mode   fs.FileMode `json:"mode,omitempty"`
}

const recordVersion = 1

// loadRecord reads the record; nil when there is none.
func (s *System) loadRecord() (*Record, error) {
	data, ok, err := s.read(RecordPath)
	if err != nil || !ok {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): it says what localnode1 changed; fix or remove it by hand", RecordPath, err)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("%s has version %d, this clusterdebian knows %d", RecordPath, r.Version, recordVersion)
	}
	return &r, nil
}

func (s *System) saveRecord(r *Record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return s.write(RecordPath, append(data, '\n'), 0o600)
}

// file returns the record of path, or nil.
func (r *Record) file(path string) *FileRecord {
	for i := range r.Files {
		if r.Files[i].Path == path {
			return &r.Files[i]
		}
	}
	return nil
}

// track records path before it is first written: its current content is
// kept under BackupDir, so that --remove can put it back. A path already
// recorded keeps its first backup, the host's own content.
func (s *System) track(r *Record, path string) error {
	if r.file(path) != nil {
		return nil
	}
	fr := FileRecord{Path: path}
	fi, err := os.Lstat(s.path(path))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file; localnode1 will not replace it", path)
	default:
		data, err := os.ReadFile(s.path(path))
		if err != nil {
			return err
		}
		fr.Backup = filepath.Join(BackupDir, strings.ReplaceAll(strings.TrimPrefix(path, "/"), "/", "%"))
		fr.Mode = fi.Mode().Perm()
		if err := s.write(fr.Backup, data, 0o600); err != nil {
			return fmt.Errorf("keeping a copy of %s: %w", path, err)
		}
	}
	r.Files = append(r.Files, fr)
	return s.saveRecord(r)
}

// mkdirs creates dir and its missing parents, recording each one made.
func (s *System) mkdirs(r *Record, dir string) error {
	var missing []string
	for d := dir; d != "/" && d != "." && !s.exists(d); d = filepath.Dir(d) {
		missing = append(missing, d)
	}
	slices.Reverse(missing)
	for _, d := range missing {
		if err := os.Mkdir(s.path(d), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if !slices.Contains(r.Dirs, d) {
			r.Dirs = append(r.Dirs, d)
		}
	}
	if len(missing) > 0 {
		return s.saveRecord(r)
	}
	return nil
}
