package slurm

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// MungeKeySize is the size of the key the head makes, as mungekey makes
// them (munged needs at least 32 bytes).
const MungeKeySize = 1024

// EnsureMungeKey returns the cluster's munge key from the head's state
// folder (contract.MungeKeyFile), making it at the first start: random,
// mode 0600, root's. Like the SSH CA it is never in the image, so that an
// ISO can be given away.
func EnsureMungeKey(stateDir string) ([]byte, error) {
	path := filepath.Join(stateDir, contract.MungeKeyFile)
	key, err := os.ReadFile(path)
	switch {
	case err == nil && len(key) >= 32:
		return key, nil
	case err == nil:
		return nil, fmt.Errorf("munge key %s has %d bytes, fewer than munge's 32: delete it to have a new one made", path, len(key))
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	key = make([]byte, MungeKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, key, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// SlurmdOptions is what a machine's slurmd registers with: its node name,
// the controller it fetches the configuration from, and its cores (the
// ones the registry counts). Its memory is what slurmd finds itself
// (slurmd -C): a RealMemory above that would have the node drained.
type SlurmdOptions struct {
	Name       string
	Controller string // node1's address
	CPUs       int
}

// Env is the environment file slurmd's unit reads (contract.SlurmdEnvFile,
// see imagefiles' slurmd.service.d): each value is one argument of slurmd's
// command line.
func (o SlurmdOptions) Env() string {
	conf := fmt.Sprintf("Feature=%s CPUs=%d", Feature, max(o.CPUs, 1))
	return "# Written by clusterdebian for slurmd.service; changes are lost.\n" +
		"SLURMD_NODENAME=" + o.Name + "\n" +
		"SLURMD_CONF_SERVER=" + o.Controller + "\n" +
		"SLURMD_CONF=" + strconv.Quote(conf) + "\n"
}

// MachineFiles writes a machine's Slurm files under root ("/"): the munge
// key where munged reads it (contract.MungeRunKey, owned by the munge user
// of root's passwd file, mode 0400, in a folder of its own) and, when opts
// is not nil, slurmd's options (contract.SlurmdEnvFile); nil removes them,
// so that slurmd does not start. It reports whether anything changed, so
// that running daemons can be restarted. A root without a munge user has
// no munge: ErrNoMunge.
func MachineFiles(root string, key []byte, opts *SlurmdOptions) (changed bool, err error) {
	uid, gid, err := lookupUser(filepath.Join(root, "etc/passwd"), "munge")
	if err != nil {
		return false, err
	}
	dir := filepath.Join(root, contract.MungeRunDir)
	// munged must get through the folders above its own: made here
	// first, they would be 0700.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return false, err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return false, err
	}
	keyPath := filepath.Join(root, contract.MungeRunKey)
	if old, err := os.ReadFile(keyPath); err != nil || !bytes.Equal(old, key) {
		changed = true
		if err := atomicfile.Write(keyPath, key, 0o400); err != nil {
			return changed, err
		}
	}
	// Set each time: a key written before the munge user existed, or by
	// hand, must still be munge's and no one else's.
	if err := os.Chown(keyPath, uid, gid); err != nil {
		return changed, err
	}
	if err := os.Chmod(keyPath, 0o400); err != nil {
		return changed, err
	}
	envPath := filepath.Join(root, contract.SlurmdEnvFile)
	old, oldErr := os.ReadFile(envPath)
	if opts == nil {
		if oldErr == nil {
			changed = true
			return changed, os.Remove(envPath)
		}
		return changed, nil
	}
	env := opts.Env()
	if oldErr != nil || string(old) != env {
		changed = true
		if err := atomicfile.Write(envPath, []byte(env), 0o644); err != nil {
			return changed, err
		}
	}
	return changed, nil
}

// ErrNoMunge: the root's passwd file has no munge user, so munge is not
// installed there.
var ErrNoMunge = errors.New("no munge user: munge is not installed")

// lookupUser finds a user's ids in a passwd file.
func lookupUser(passwd, name string) (uid, gid int, err error) {
	f, err := os.Open(passwd)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 4 || fields[0] != name {
			continue
		}
		uid, err1 := strconv.Atoi(fields[2])
		gid, err2 := strconv.Atoi(fields[3])
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("%s: bad line for %s", passwd, name)
		}
		return uid, gid, nil
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	return 0, 0, fmt.Errorf("%w (%s)", ErrNoMunge, passwd)
}
