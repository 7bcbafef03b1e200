package head

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// node1's kernel NFS server starts with Debian's default of 8 nfsd threads
// (nfs.conf [nfsd] threads). When a room of machines boots at once, each
// node's boot is a chain of small reads that wait on the one before, so
// every booting node wants a thread of its own; with 8, the ninth queues
// behind the others and its RPCs time out. The head therefore raises the
// count whenever the export set changes, before the new node mounts: one
// thread per exported node, at least 4 per core (nfsd threads also wait on
// node1's disk, or here its RAM-held overlay) and never fewer than
// Debian's 8. A thread costs about one RPC buffer (up to 1 MiB with the
// largest rsize) while it works, and a sleeping kernel thread while not.
const (
	// NFSDMinThreads is Debian's default.
	NFSDMinThreads = 8
	// NFSDThreadsPerCore is the floor per core of node1.
	NFSDThreadsPerCore = 4
	// NFSDMaxThreads bounds the count for very large rooms: 512 threads
	// of 1 MiB buffers are half a GiB of node1's RAM at worst.
	NFSDMaxThreads = 512
)

// NFSDThreads is the nfsd thread count for node1 with cores CPU cores
// exporting to nodes nodes: max(8, 4 × cores, nodes), at most 512.
func NFSDThreads(cores, nodes int) int {
	return min(max(NFSDMinThreads, NFSDThreadsPerCore*cores, nodes), NFSDMaxThreads)
}

// nfsdThreadsFile is the kernel NFS server's thread count: reading it gives
// the running threads, writing it sets them (rpc.nfsd does the same).
const nfsdThreadsFile = "/proc/fs/nfsd/threads"

// errNFSDNotRunning is setNFSDThreads' error when the kernel NFS server
// runs no thread: starting it is nfs-server.service's job, with its ports.
var errNFSDNotRunning = errors.New("the kernel NFS server is not running (" + nfsdThreadsFile + " says 0 threads)")

// setNFSDThreads writes n to the threads file at path, if the server runs.
// It returns the count it found.
func setNFSDThreads(path string, n int) (was int, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("nfsd threads: %w", err)
	}
	was, err = strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, fmt.Errorf("nfsd threads: %s holds %q", path, data)
	}
	if was == 0 {
		return 0, errNFSDNotRunning
	}
	if was == n {
		return was, nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
		return was, fmt.Errorf("nfsd threads: %w", err)
	}
	return was, nil
}

func (hostSystem) SetNFSDThreads(_ context.Context, n int) (int, error) {
	return setNFSDThreads(nfsdThreadsFile, n)
}
