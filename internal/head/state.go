package head

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// prepareState creates the state folder and its TFTP root and returns the
// cluster token.
func prepareState(dir string) (token string, err error) {
	if err := os.MkdirAll(filepath.Join(dir, contract.TFTPDir), 0o755); err != nil {
		return "", fmt.Errorf("state folder: %w", err)
	}
	return loadToken(filepath.Join(dir, contract.TokenFile))
}

// loadToken returns the cluster's token from path, making one on first use.
// The token is a secret shared by the head and its nodes (it rides on the
// nodes' kernel command line), so the file is readable by root only; a
// restarted head keeps it, so nodes that booted before still match.
func loadToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(data))
		if !validToken(tok) {
			return "", fmt.Errorf("token file %s is damaged (want 64 hex digits); delete it to make a new one", path)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(path, 0o600); err != nil {
				return "", err
			}
		}
		return tok, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("token: %w", err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b[:])
	// Write it whole or not at all, and to disk: a half-written or lost
	// token would lock out every node on the next start. The temporary file
	// is 0600 from its creation, so the token is never readable by others.
	if err := atomicfile.WriteSync(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return tok, nil
}

func validToken(tok string) bool {
	if len(tok) != 64 {
		return false
	}
	_, err := hex.DecodeString(tok)
	return err == nil
}
