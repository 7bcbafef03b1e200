// Package clusterfiles writes the files that tell programs which nodes the
// cluster has, from the head's node registry:
//
//   - /etc/hosts: every known node's name (node<N>, node<N>.cluster), so
//     names resolve on every node without DNS;
//   - /etc/cluster/mpi.hosts: the live nodes with their core counts, an
//     Open MPI hostfile ("node3 slots=4");
//   - /etc/openmpi/openmpi-default-hostfile and prte-default-hostfile: the
//     same, where Debian's Open MPI looks when given no hostfile (Open MPI 4
//     in bookworm reads the first, Open MPI 5's PRRTE in trixie the second),
//     so plain `mpirun -np K ./prog` runs on every live node;
//   - /etc/cluster/pvm.hosts: the live nodes, one per line, for PVM;
//   - ~/mpi.hosts and ~/pvm.hosts links in root's and every user's home;
//   - a block in Open MPI's and PRRTE's parameter files that keeps MPI on
//     the cluster subnet (MPIParams), which may change from boot to boot.
//
// PVM needs no such setting: each pvmd binds its UDP socket to the address
// its host name resolves to (the master's own name, the others' names as
// the master resolves them from pvm.hosts), and /etc/hosts maps every node
// name to its cluster address in a block that comes first in the file.
//
// /etc and /home are shared by every node (node1's root over NFS), so the
// head writes them once for all. Every file is replaced atomically, because
// other nodes read them at any moment, and only when its content changes,
// so that a heartbeat storm does not churn the NFS export.
package clusterfiles

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/homes"
	"github.com/clusterdebian/clusterdebian/internal/markedblock"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// Paths under the root, and the link names in homes.
const (
	HostsPath          = "etc/hosts"
	MPIHostsPath       = "etc/cluster/mpi.hosts"
	PVMHostsPath       = "etc/cluster/pvm.hosts"
	OpenMPIDefaultPath = "etc/openmpi/openmpi-default-hostfile"
	// PRRTEDefaultPath is Open MPI 5's (PRRTE's) default hostfile.
	PRRTEDefaultPath = "etc/openmpi/prte-default-hostfile"
	MPIHostsLink     = "mpi.hosts"
	PVMHostsLink     = "pvm.hosts"

	beginMarker = markedblock.Begin
	endMarker   = markedblock.End
	header      = "# Written by the clusterdebian head daemon from its node registry; changes are lost.\n"
)

// Write writes the cluster files under root ("/" on the head; a temporary
// folder in tests) for nodes. Nodes whose address is outside subnet are
// left out (a zero subnet keeps all): hostfiles must not send MPI ranks
// off the cluster network. It goes on past a failure and returns every
// error.
func Write(root string, nodes []registry.Node, subnet netip.Prefix) error {
	return errors.Join(WriteSystem(root, nodes, subnet), linkHomes(root))
}

// WriteSystem writes the cluster files outside the home folders: what a
// node with its own root writes for itself, while the home folders, shared
// from node1, are the head's.
func WriteSystem(root string, nodes []registry.Node, subnet netip.Prefix) error {
	known := selectNodes(nodes, subnet)
	var up []registry.Node
	for _, n := range known {
		if n.State == registry.StateUp {
			up = append(up, n)
		}
	}
	var errs []error
	if err := writeHosts(filepath.Join(root, HostsPath), known); err != nil {
		errs = append(errs, err)
	}
	mpi := mpiHosts(up)
	for _, p := range []string{MPIHostsPath, OpenMPIDefaultPath, PRRTEDefaultPath} {
		if err := writeIfChanged(filepath.Join(root, p), mpi); err != nil {
			errs = append(errs, err)
		}
	}
	if err := writeIfChanged(filepath.Join(root, PVMHostsPath), pvmHosts(up)); err != nil {
		errs = append(errs, err)
	}
	if err := writeMPIParams(root, subnet); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// selectNodes keeps the nodes with a valid address in subnet, the head
// first (mpirun's rank 0 then runs where the user typed the command), the
// others by address.
func selectNodes(nodes []registry.Node, subnet netip.Prefix) []registry.Node {
	type entry struct {
		n  registry.Node
		ip netip.Addr
	}
	var es []entry
	for _, n := range nodes {
		ip, err := netip.ParseAddr(n.IP)
		if err != nil || !ip.Is4() || n.Name == "" || strings.ContainsAny(n.Name, " \t\n#") {
			continue
		}
		if subnet.IsValid() && !subnet.Contains(ip) {
			continue
		}
		es = append(es, entry{n, ip})
	}
	slices.SortStableFunc(es, func(a, b entry) int {
		ah, bh := a.n.Role == registry.RoleHead, b.n.Role == registry.RoleHead
		switch {
		case ah && !bh:
			return -1
		case bh && !ah:
			return 1
		}
		return a.ip.Compare(b.ip)
	})
	out := make([]registry.Node, len(es))
	for i, e := range es {
		out[i] = e.n
	}
	return out
}

// mpiHosts is an Open MPI hostfile: one "name slots=cores" line per node.
func mpiHosts(up []registry.Node) []byte {
	var b strings.Builder
	b.WriteString(header)
	for _, n := range up {
		fmt.Fprintf(&b, "%s slots=%d\n", n.Name, max(n.Cores, 1))
	}
	return []byte(b.String())
}

// pvmHosts is a PVM hostfile: one name per line.
func pvmHosts(up []registry.Node) []byte {
	var b strings.Builder
	b.WriteString(header)
	for _, n := range up {
		b.WriteString(n.Name + "\n")
	}
	return []byte(b.String())
}

// writeHosts replaces the clusterdebian block of /etc/hosts and keeps every
// other line. Known nodes are listed whether up or down: a node that
// missed a few heartbeats still has its address, and ssh to it should say
// "no route", not "unknown host". A new block goes first in the file,
// because with several lines for one name the resolver returns the first:
// the cluster's own addresses must win over a stale line added by hand.
func writeHosts(path string, known []registry.Node) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if errors.Is(err, fs.ErrNotExist) {
		// A root without /etc/hosts would otherwise lose localhost.
		old = []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	}
	var b strings.Builder
	b.WriteString(beginMarker + " (written by the clusterdebian head daemon; changes inside are lost)\n")
	for _, n := range known {
		fmt.Fprintf(&b, "%s\t%s %s.%s\n", n.IP, n.Name, n.Name, contract.Domain)
	}
	b.WriteString(endMarker + "\n")
	return writeIfChanged(path, markedblock.Replace(old, b.String(), true))
}

// writeIfChanged replaces path with data (mode 0644) unless it already
// holds exactly that. Leaving an unchanged file alone keeps its inode and
// time, so NFS clients' caches stay valid and nothing is rewritten on
// every heartbeat.
func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == 0o644 {
			return nil
		}
	}
	return atomicfile.Write(path, data, 0o644)
}

// linkHomes makes ~/mpi.hosts and ~/pvm.hosts in root's home and in every
// home under /home, owned like the home, so `mpirun --hostfile mpi.hosts`
// works from any home folder. A file or link the user made under those
// names is theirs and is left alone.
func linkHomes(root string) error {
	return homes.Each(root, func(h homes.Home) error {
		var errs []error
		for link, target := range map[string]string{MPIHostsLink: "/" + MPIHostsPath, PVMHostsLink: "/" + PVMHostsPath} {
			p := filepath.Join(h.Path, link)
			if _, err := os.Lstat(p); err == nil {
				continue
			} else if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
				continue
			}
			// The target is absolute in the running system, not under
			// root: the link is followed on the nodes, not here.
			if err := os.Symlink(target, p); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := os.Lchown(p, h.UID, h.GID); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}
