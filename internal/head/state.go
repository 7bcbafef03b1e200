package head

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
)

// prepareState creates the state folder and its TFTP root and returns the
// cluster token, and where a damaged token file was set aside ("" if it was
// not).
func prepareState(dir string) (token, keptAs string, err error) {
	if err := os.MkdirAll(filepath.Join(dir, contract.TFTPDir), 0o755); err != nil {
		return "", "", fmt.Errorf("state folder: %w", err)
	}
	return loadToken(filepath.Join(dir, contract.TokenFile))
}

// loadToken returns the cluster's token from path, making one on first use.
// The token is a secret shared by the head and its nodes (it rides on the
// nodes' kernel command line), so the file is readable by root only; a
// restarted head keeps it, so nodes that booted before still match.
//
// A file that holds no token (truncated, overwritten) is renamed to
// <path>.corrupt-<UTC time> and a new token made, so the head starts rather
// than failing at every restart; keptAs is where the old file went. The old
// token is lost with it: nodes that booted with it must boot again.
func loadToken(path string) (tok, keptAs string, err error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(data))
		if !validToken(tok) {
			if keptAs, err = atomicfile.SetAside(path, time.Now()); err != nil {
				return "", "", fmt.Errorf("token file %s is damaged (want 64 hex digits), and it cannot be set aside: %w", path, err)
			}
			break
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(path, 0o600); err != nil {
				return "", "", err
			}
		}
		return tok, "", nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", "", fmt.Errorf("token: %w", err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	tok = hex.EncodeToString(b[:])
	// Write it whole or not at all, and to disk: a half-written or lost
	// token would lock out every node on the next start. The temporary file
	// is 0600 from its creation, so the token is never readable by others.
	if err := atomicfile.WriteSync(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("token: %w", err)
	}
	return tok, keptAs, nil
}

// fileHolds reports whether the file at path holds exactly data.
func fileHolds(path string, data []byte) bool {
	old, err := os.ReadFile(path)
	return err == nil && bytes.Equal(old, data)
}

func validToken(tok string) bool {
	if len(tok) != 64 {
		return false
	}
	_, err := hex.DecodeString(tok)
	return err == nil
}

// checkStateExport refuses a state folder that the NFS export the head is
// about to make would let any of its clients read: the SSH CA key (forges
// any host's certificate), the cluster token (registers any machine and
// gets it certified), the leases and the node registry. An export does not
// cross into another mounted file system (no crossmnt or nohide), so the
// state folder is safe on a file system of its own; on the exported one it
// is not, wherever mounts hide it: the NFS server looks up names in the
// exported file system itself, under any mount (and takes file handles for
// any of its files), so even a bind mount of the folder onto itself hides
// nothing. The head refuses rather than warns, because a warning in a
// journal does not keep the CA key from a node's root, and such a head
// would give it away from its first minute.
func (h *Head) checkStateExport() error {
	if !h.machineRoot() {
		return nil
	}
	exported := filepath.Join(h.opts.ClusterRoot, ExportPath(h.opts.Root))
	exposed, err := StateExposed(h.opts.StateDir, exported, h.sys.FileSystemID)
	if err != nil {
		return optionError(InputStateDir, fmt.Errorf("checking that NFS does not export it: %w", err))
	}
	if exposed {
		return optionErrorf(InputStateDir, "%s is on the file system that node1 exports to the nodes as %s, so every NFS client could read the SSH CA key and the cluster token in it: "+
			"mount a file system of its own there (a tmpfs, as the live image's var-lib-clusterdebian.mount does, or a partition), or use the RAM root, which exports /home only",
			h.opts.StateDir, ExportPath(h.opts.Root))
	}
	return nil
}

// StateExposed reports whether the folder state lies inside the exported
// folder and on the same file system (fsID, as System.FileSystemID): only
// then can an NFS client of that export read it. A state folder not made
// yet counts as on the file system of its nearest existing parent, where it
// would be made.
func StateExposed(state, exported string, fsID func(path string) (uint64, error)) (bool, error) {
	s, err := filepath.Abs(state)
	if err != nil {
		return false, err
	}
	e, err := filepath.Abs(exported)
	if err != nil {
		return false, err
	}
	for _, p := range []*string{&s, &e} {
		if r, err := filepath.EvalSymlinks(*p); err == nil {
			*p = r
		}
	}
	if rel, err := filepath.Rel(e, s); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return false, nil
	}
	for {
		if _, err := os.Lstat(s); err == nil || s == e || s == filepath.Dir(s) {
			break
		}
		s = filepath.Dir(s)
	}
	sid, err := fsID(s)
	if err != nil {
		return false, err
	}
	eid, err := fsID(e)
	if err != nil {
		return false, err
	}
	return sid == eid, nil
}
