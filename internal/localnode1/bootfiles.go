package localnode1

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
)

// syncPlan compares the netboot files in from with those in to: copies are
// the files of from that to lacks or has with another size or time (a copy
// keeps the time, so an unchanged file is not read again: the layers are
// hundreds of MiB), stale the files of to that from does not have (an old
// layer would be stacked onto the new ones).
func syncPlan(from, to string) (copies, stale []string, err error) {
	src, err := os.ReadDir(from)
	if err != nil {
		return nil, nil, inputerr.New(InputFrom, from, err)
	}
	have := map[string]bool{}
	for _, e := range src {
		if !e.Type().IsRegular() {
			continue
		}
		have[e.Name()] = true
		si, err := e.Info()
		if err != nil {
			return nil, nil, err
		}
		di, err := os.Stat(filepath.Join(to, e.Name()))
		if err != nil || di.Size() != si.Size() || !di.ModTime().Equal(si.ModTime()) {
			copies = append(copies, e.Name())
		}
	}
	dst, err := os.ReadDir(to)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	for _, e := range dst {
		if !have[e.Name()] {
			stale = append(stale, e.Name())
		}
	}
	slices.Sort(copies)
	slices.Sort(stale)
	return copies, stale, nil
}

// syncFiles copies the files named in copies from from to to (through a
// temporary file, keeping the time) and removes stale ones.
func syncFiles(from, to string, copies, stale []string) error {
	for _, name := range copies {
		// Whole or not at all: the head may be serving the file to a node
		// at this moment, and must never serve half a layer. The time is
		// kept so that the next syncPlan finds the file unchanged.
		err := atomicfile.Copy(filepath.Join(from, name), filepath.Join(to, name),
			atomicfile.CopyOptions{Mode: 0o644, KeepTime: true, Sync: true})
		if err != nil {
			return err
		}
	}
	for _, name := range stale {
		if err := os.RemoveAll(filepath.Join(to, name)); err != nil {
			return err
		}
	}
	return nil
}
