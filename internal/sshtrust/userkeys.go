package sshtrust

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/homes"
)

// EnsureUserKeys gives root (root/root) and every user with a home in
// root/home/* an ed25519 key pair (~/.ssh/id_ed25519) authorized for
// themselves. Homes are shared by all nodes, so one key that logs in to
// "itself" logs in everywhere: this is what makes ssh from node to node,
// and so mpirun, passwordless. A user's folder owner is taken as the user,
// which avoids depending on /etc/passwd of the root being prepared.
//
// It is idempotent: an existing key is kept and authorized once. It runs
// as root inside users' homes, so it never follows a symbolic link a user
// may have planted at ~/.ssh or its files. Problems with one home do not
// stop the others; all are returned together.
func EnsureUserKeys(root string) error {
	return homes.Each(root, func(h homes.Home) error {
		if err := ensureUserKey(h); err != nil {
			return fmt.Errorf("ssh key in %s: %w", h.Path, err)
		}
		return nil
	})
}

// ensureUserKey does EnsureUserKeys for one home.
func ensureUserKey(h homes.Home) error {
	sshDir := filepath.Join(h.Path, ".ssh")
	if err := ensureDir(sshDir, 0o700, h.UID, h.GID); err != nil {
		return err
	}
	keyPath := filepath.Join(sshDir, UserKeyFile)
	comment := filepath.Base(h.Path) + "@cluster"
	pub, err := userPublicKey(keyPath, comment, h.UID, h.GID)
	if err != nil {
		return err
	}
	return authorize(filepath.Join(sshDir, AuthorizedKeys), pub, comment, h.UID, h.GID)
}

// ensureDir makes dir (mode, owned by uid:gid) or corrects an existing one.
func ensureDir(dir string, mode fs.FileMode, uid, gid int) error {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dir, mode); err != nil {
			return err
		}
		if err := os.Chmod(dir, mode); err != nil { // umask
			return err
		}
		return os.Lchown(dir, uid, gid)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a folder (a link or a file); left alone", dir)
	}
	return fixOwnerMode(dir, fi, mode, uid, gid)
}

// fixOwnerMode sets the owner and mode of a file or folder if they differ.
// sshd's StrictModes refuses keys in files others may write to, so these
// are corrected rather than reported.
func fixOwnerMode(path string, fi fs.FileInfo, mode fs.FileMode, uid, gid int) error {
	if fi.Mode().Perm() != mode {
		if err := os.Chmod(path, mode); err != nil {
			return err
		}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && (int(st.Uid) != uid || int(st.Gid) != gid) {
		return os.Lchown(path, uid, gid)
	}
	return nil
}

// userPublicKey returns the public key of the user's key at path, making
// the pair if there is none and the .pub file if it is missing.
func userPublicKey(path, comment string, uid, gid int) (ssh.PublicKey, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		pub, _, err := writeKeyPairOwned(path, comment, uid, gid)
		return pub, err
	}
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file; left alone", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pub ssh.PublicKey
	signer, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	switch {
	case err == nil:
		pub = signer.PublicKey()
	case errors.As(err, &missing) && missing.PublicKey != nil:
		// The user protected their key with a passphrase: it is theirs to
		// use with an agent; still authorize it.
		pub = missing.PublicKey
	default:
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := fixOwnerMode(path, fi, 0o600, uid, gid); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path + ".pub"); errors.Is(err, fs.ErrNotExist) {
		line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " " + comment + "\n"
		if err := writeAtomic(path+".pub", []byte(line), 0o644, uid, gid); err != nil {
			return nil, err
		}
	}
	return pub, nil
}

// authorize adds pub to the authorized_keys file at path unless a line
// already holds it, and keeps the file private to its user.
func authorize(path string, pub ssh.PublicKey, comment string, uid, gid int) error {
	fi, err := os.Lstat(path)
	var old []byte
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file; left alone", path)
	default:
		if old, err = os.ReadFile(path); err != nil {
			return err
		}
		if hasKey(old, pub) {
			return fixOwnerMode(path, fi, 0o600, uid, gid)
		}
	}
	data := append([]byte(nil), old...)
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\n")) {
		data = append(data, '\n')
	}
	data = append(data, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))+" "+comment+"\n"...)
	return writeAtomic(path, data, 0o600, uid, gid)
}

// hasKey reports whether authorized_keys text holds pub on some line,
// whatever that line's options and comment.
func hasKey(text []byte, pub ssh.PublicKey) bool {
	want := pub.Marshal()
	rest := text
	for len(rest) > 0 {
		key, _, _, next, err := ssh.ParseAuthorizedKey(rest)
		if err != nil {
			return false // no more valid keys
		}
		if bytes.Equal(key.Marshal(), want) {
			return true
		}
		rest = next
	}
	return false
}

// writeAtomic replaces path atomically, so readers (sshd, ssh clients on
// other nodes) see the old or the new content, never a part. uid and gid of
// -1 keep the caller's.
func writeAtomic(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	return atomicfile.WriteOwned(path, data, mode, uid, gid)
}
