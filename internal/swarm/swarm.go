// Package swarm spreads the image layers of RAM-root nodes through the
// nodes that already hold them, so that node1's link does not carry one copy
// per node.
//
//   - Manifest: node1 hashes its layers (SHA-256) and puts the sums on every
//     node's kernel command line (contract.ParamLayerSums). node1 is the
//     root of trust: the initrd refuses a layer whose sum differs, whoever
//     served it.
//   - Broker: node1 answers a layer request with a redirect to a peer that
//     holds the layer (a node that reported it verified, and runs), with at
//     most MaxUploads transfers per peer at a time, never to a peer that is
//     down or served a bad copy. node1 serves a layer itself only within
//     its own cap (Node1Uploads, a peer's) and only when no peer holds it
//     or is about to (reported it, not yet registered): it seeds the swarm,
//     and what it sends does not grow with the number of nodes. A request
//     that can go nowhere yet waits in a FIFO queue, held open, until a
//     slot frees or a reporter registers, at most MaxWait (below the
//     initrd's 900 s), then node1 serves it past its cap. The initrd
//     reports how each fetch ended, which releases the peer's upload slot;
//     a slot whose report never comes is released when its lease runs out.
//   - Server: a node's agent serves its verified layers, read-only, on
//     contract.SwarmPort.
package swarm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// Manifest keeps the SHA-256 of the layers in a folder, hashing a file
// again only when its size or modification time changed.
type Manifest struct {
	dir string
	mu  sync.Mutex
	m   map[string]entry
	// total is the size of the layers of the last Sums.
	total int64
}

type entry struct {
	size  int64
	mtime time.Time
	sum   string
}

// NewManifest returns an empty manifest of dir.
func NewManifest(dir string) *Manifest { return &Manifest{dir: dir, m: map[string]entry{}} }

// Sums returns layer name → hex SHA-256 for the named layers (files in the
// manifest's folder), and their total size in bytes. It hashes a layer the
// first time and after it changed; an error names the file.
func (m *Manifest) Sums(layers []string) (map[string]string, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(layers))
	var total int64
	for _, name := range layers {
		path := filepath.Join(m.dir, name)
		st, err := os.Stat(path)
		if err != nil {
			return nil, 0, err
		}
		e, ok := m.m[name]
		if !ok || e.size != st.Size() || !e.mtime.Equal(st.ModTime()) {
			sum, err := hashFile(path)
			if err != nil {
				return nil, 0, err
			}
			e = entry{size: st.Size(), mtime: st.ModTime(), sum: sum}
			m.m[name] = e
		}
		out[name] = e.sum
		total += e.size
	}
	m.total = total
	return out, total, nil
}

// Total returns the size in bytes of the layers of the last Sums: the
// image a node fetches.
func (m *Manifest) Total() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total
}

// Size returns the size in bytes of a layer the manifest hashed, or 0.
func (m *Manifest) Size(name string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.m[name].size
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// LayerURL is the URL of a layer on a peer: http://<peer>:SwarmPort/<layer>.
func LayerURL(peer string, layer string) string {
	return fmt.Sprintf("http://%s:%d/%s", peer, contract.SwarmPort, layer)
}
