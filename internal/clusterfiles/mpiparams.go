package clusterfiles

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/markedblock"
)

// The MPI runtimes' system-wide parameter files, as Debian's packages read
// them (sysconfdir /etc/openmpi on bookworm and trixie alike):
//
//   - OpenMPIParamsPath is read by every Open MPI process: the MPI ranks of
//     Open MPI 4 (bookworm) and 5 (trixie), and Open MPI 4's own runtime
//     (ORTE's mpirun and orted);
//   - PRRTEParamsPath is read by Open MPI 5's runtime, PRRTE 3 (prterun,
//     which mpirun execs, and the prted daemons on every node), which does
//     not read the first file (only under $OMPIHOME).
//
// PMIx keeps its own file (/usr/lib/x86_64-linux-gnu/pmix2/share/
// pmix-mca-params.conf on trixie) and needs nothing: its only TCP listener
// serves the MPI ranks and tools of its own node, on loopback.
const (
	OpenMPIParamsPath = "etc/openmpi/openmpi-mca-params.conf"
	PRRTEParamsPath   = "etc/openmpi/prte-mca-params.conf"
)

// MPIParams returns the ClusterDebian block of each parameter file (by its
// path under the root) for a cluster subnet: every TCP connection of MPI
// and its runtime goes over the cluster network only. Without it, a node1
// or a localnode1 host with an uplink, docker0 or virbr0 advertises those
// addresses too, the other side tries them (docker0's 172.17.0.1 is on
// every host with Docker, so it even reaches itself), and mpirun hangs.
//
//   - btl_tcp_if_include: the MPI ranks' TCP transport (Open MPI 4 and 5);
//   - oob_tcp_if_include: Open MPI 4's runtime (mpirun and orted); Open
//     MPI 5's ranks ignore it without a word;
//   - prte_if_include: PRRTE's daemons (its oob_tcp_if_include is a
//     deprecated synonym that prints a warning at every run).
//
// The subnet is written in CIDR form, which all three accept.
func MPIParams(subnet netip.Prefix) map[string]string {
	cidr := subnet.Masked().String()
	head := markedblock.Begin + " (written by clusterdebian for this boot's cluster network; changes inside are lost)\n" +
		"# MPI and its runtime use the cluster network only, so that other interfaces\n" +
		"# (an uplink, docker0, virbr0) do not make mpirun hang. A setting of yours\n" +
		"# below this block wins over it.\n"
	return map[string]string{
		OpenMPIParamsPath: head + "btl_tcp_if_include = " + cidr + "\n" + "oob_tcp_if_include = " + cidr + "\n" + markedblock.End + "\n",
		PRRTEParamsPath:   head + "prte_if_include = " + cidr + "\n" + markedblock.End + "\n",
	}
}

// writeMPIParams puts MPIParams(subnet) into the parameter files under root,
// as marked blocks: everything else in them (Debian's settings, the user's)
// is kept. The block goes first because where a file sets a parameter twice
// the last line wins: a user's own setting below it overrides the cluster's.
// A file missing its last line break (trixie's openmpi-mca-params.conf) is
// mended, not glued to. A zero subnet writes nothing.
func writeMPIParams(root string, subnet netip.Prefix) error {
	if !subnet.IsValid() {
		return nil
	}
	var errs []error
	for rel, block := range MPIParams(subnet) {
		path := filepath.Join(root, rel)
		old, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		data := markedblock.Replace(old, block, true)
		if len(old) > 0 && !strings.HasSuffix(string(data), "\n") {
			data = append(data, '\n')
		}
		if err := writeIfChanged(path, data); err != nil {
			errs = append(errs, fmt.Errorf("MPI parameters: %w", err))
		}
	}
	return errors.Join(errs...)
}
