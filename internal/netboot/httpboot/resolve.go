package httpboot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Path errors, mapped to HTTP statuses by serveFile.
var (
	errBadPath = errors.New("invalid path")                         // 400
	errOutside = errors.New("file resolves outside the folder")     // 403
	errMissing = errors.New("no such file")                         // 404
	errDenied  = errors.New("file not readable by the boot server") // 403
)

// maxPathLen bounds accepted request paths; boot artifacts have short names.
const maxPathLen = 1024

// checkRel validates the file part of a URL path (already percent-decoded).
// Unlike TFTP, HTTP clients are well behaved, so anything unusual — "..",
// ".", empty elements, backslashes, NUL — is simply refused rather than
// interpreted; iPXE, curl and wget never send them.
func checkRel(rel string) error {
	if rel == "" || strings.HasSuffix(rel, "/") {
		return errMissing // a folder: never listed
	}
	if len(rel) > maxPathLen || strings.ContainsAny(rel, "\\\x00") {
		return errBadPath
	}
	for p := range strings.SplitSeq(rel, "/") {
		if p == "" || p == "." || p == ".." {
			return errBadPath
		}
	}
	return nil
}

// resolveIn maps rel (validated by checkRel) to a regular file inside dir.
// It returns the symlink-free folder the file lies in (dir itself, or one
// of allow when a symlink inside dir points there) and the file's path
// below that folder, for opening through an os.Root.
func resolveIn(dir string, allow []string, rel string) (base, below string, err error) {
	if err := checkRel(rel); err != nil {
		return "", "", err
	}
	realDir, err := realPath(dir)
	if err != nil {
		return "", "", errMissing
	}
	p, err := filepath.EvalSymlinks(filepath.Join(realDir, filepath.FromSlash(rel)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return "", "", errMissing
		}
		if errors.Is(err, fs.ErrPermission) {
			return "", "", errDenied
		}
		return "", "", fmt.Errorf("%w: %v", errMissing, err) // e.g. a symlink loop
	}
	switch {
	case within(realDir, p):
		base = realDir
	default:
		for _, a := range allow {
			if ra, err := realPath(a); err == nil && within(ra, p) {
				base = ra
				break
			}
		}
	}
	if base == "" {
		return "", "", errOutside
	}
	below, err = filepath.Rel(base, p)
	if err != nil {
		return "", "", errOutside
	}
	return base, below, nil
}

// openIn resolves rel inside dir and opens it through an os.Root on the
// folder it resolved into, so a symlink swapped in after the check still
// cannot lead out of that folder. Only regular files are returned.
func openIn(dir string, allow []string, rel string) (*os.File, fs.FileInfo, error) {
	base, below, err := resolveIn(dir, allow, rel)
	if err != nil {
		return nil, nil, err
	}
	root, err := os.OpenRoot(base)
	if err != nil {
		return nil, nil, errMissing
	}
	defer root.Close()
	f, err := root.Open(below)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, nil, errDenied
		}
		return nil, nil, fmt.Errorf("%w: %v", errMissing, err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, errMissing // folders, devices, FIFOs are never served
	}
	return f, st, nil
}

func realPath(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// within reports whether p lies strictly below dir (both clean, absolute,
// symlink-free).
func within(dir, p string) bool {
	r, err := filepath.Rel(dir, p)
	if err != nil || r == "." || filepath.IsAbs(r) {
		return false
	}
	return r != ".." && !strings.HasPrefix(r, ".."+string(filepath.Separator))
}
