package localnode1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/clusterfiles"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/markedblock"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

// Removal is what Remove would undo: the record of a localnode1 setup.
type Removal struct {
	rec *Record
	sys *System
}

// PlanRemove reads the record; nil (and no error) when this host was not
// set up with localnode1.
func PlanRemove(sys *System) (*Removal, error) {
	r, err := sys.loadRecord()
	if err != nil || r == nil {
		return nil, err
	}
	return &Removal{rec: r, sys: sys}, nil
}

// Describe writes what Remove undoes.
func (m *Removal) Describe(w io.Writer) {
	r := m.rec
	fmt.Fprintf(w, "removing localnode1: this host stops being node1 (%s on %s)\n", r.Address, r.Interface)
	fmt.Fprintf(w, "  - stop and disable %s\n", ServiceName)
	for _, u := range r.Enabled {
		if u != ServiceName {
			fmt.Fprintf(w, "  - stop and disable %s (it was not enabled before)\n", u)
		}
	}
	fmt.Fprintf(w, "  - take %s off %s\n", r.Address, r.Interface)
	for _, f := range slices.Backward(r.Files) {
		switch {
		case f.Backup != "":
			fmt.Fprintf(w, "  - put back the earlier %s\n", f.Path)
		case m.sys.exists(f.Path):
			fmt.Fprintf(w, "  - remove %s\n", f.Path)
		}
	}
	fmt.Fprintf(w, "  - take the clusterdebian blocks out of /etc/hosts and /etc/ssh/ssh_known_hosts, and the ~/mpi.hosts links out of the homes\n")
	for _, d := range slices.Backward(r.Dirs) {
		if m.sys.exists(d) {
			fmt.Fprintf(w, "  - remove %s\n", d)
		}
	}
	if len(r.Packages) > 0 {
		fmt.Fprintf(w, "kept: the packages localnode1 installed (%s)\n", strings.Join(r.Packages, " "))
	}
	fmt.Fprintf(w, "kept: the users' SSH keys (~/.ssh/%s) the head made\n", sshtrust.UserKeyFile)
}

// Remove undoes the setup. It goes on past failures, so that one stuck
// step does not leave the rest behind, and returns them all.
func (m *Removal) Remove(ctx context.Context) error {
	sys, r := m.sys, m.rec
	var errs []error
	fail := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	run := func(name string, args ...string) error {
		_, err := sys.Run(ctx, name, args...)
		return err
	}

	sys.logf("stopping and disabling %s", ServiceName)
	fail(run("systemctl", "disable", "--now", ServiceName))
	for _, u := range r.Enabled {
		if u != ServiceName {
			sys.logf("stopping and disabling %s", u)
			fail(run("systemctl", "disable", "--now", u))
		}
	}
	// The configuration goes down while its file is still there (ifdown
	// and nmcli read it).
	sys.netDown(ctx, r.Network, r.Interface)

	for _, f := range slices.Backward(r.Files) {
		fail(m.restore(f))
	}
	if addr, err := netip.ParsePrefix(r.Address); err == nil {
		// The head adds the address itself and leaves it on exit.
		if addrs, err := sys.Addrs(r.Interface); err == nil && hasAddr(addrs, addr) {
			sys.logf("taking %s off %s", addr, r.Interface)
			fail(run("ip", "addr", "del", addr.String(), "dev", r.Interface))
		}
	}
	sys.netReload(ctx, r.Network)
	sys.logf("exportfs -ra")
	// Without an NFS server (stopped above, if localnode1 started it)
	// there is nothing to unexport.
	if sys.unitActive(ctx, nfsServer) {
		fail(run("exportfs", "-ra"))
	}
	fail(m.cleanClusterFiles())
	// The head's certificate for the host key goes with the drop-in that
	// named it; sshd then presents the plain key again.
	if _, ok, _ := sys.read("/" + head.InstalledHostCert); ok {
		sys.logf("removing /%s", head.InstalledHostCert)
		fail(ignoreMissing(os.Remove(sys.path("/" + head.InstalledHostCert))))
		if sys.unitActive(ctx, "ssh.service") {
			fail(run("systemctl", "try-reload-or-restart", "ssh.service"))
		}
	}
	fail(run("systemctl", "daemon-reload"))
	for _, d := range slices.Backward(r.Dirs) {
		if d == StateDir && len(errs) > 0 {
			continue // it holds the record: keep it for another try
		}
		fail(m.removeDir(d))
	}
	// The record goes last: with it gone, nothing says what was changed.
	// It is in the state folder, which is gone already when localnode1
	// made it.
	if len(errs) == 0 {
		fail(ignoreMissing(os.RemoveAll(sys.path(BackupDir))))
		fail(ignoreMissing(os.Remove(sys.path(RecordPath))))
	}
	return errors.Join(errs...)
}

// restore puts a file's earlier content back, or removes it.
func (m *Removal) restore(f FileRecord) error {
	sys := m.sys
	if f.Backup == "" {
		if sys.exists(f.Path) {
			sys.logf("removing %s", f.Path)
		}
		return ignoreMissing(os.Remove(sys.path(f.Path)))
	}
	data, err := os.ReadFile(sys.path(f.Backup))
	if err != nil {
		return fmt.Errorf("the copy of %s: %w", f.Path, err)
	}
	if cur, _, _ := sys.read(f.Path); bytes.Equal(cur, data) && modeOf(sys.path(f.Path)) == f.Mode {
		return nil
	}
	sys.logf("putting back the earlier %s", f.Path)
	if err := sys.write(f.Path, data, f.Mode); err != nil {
		return err
	}
	return os.Chmod(sys.path(f.Path), f.Mode)
}

// removeDir removes a folder localnode1 (or its head) made: the ones
// holding only ClusterDebian's files with all they hold, the shared /etc
// ones only when empty.
func (m *Removal) removeDir(d string) error {
	sys := m.sys
	if !sys.exists(d) {
		return nil
	}
	switch d {
	case StateDir, BootDir, "/etc/cluster", contract.RunDir, "/etc/clusterdebian":
		sys.logf("removing %s", d)
		return os.RemoveAll(sys.path(d))
	}
	err := os.Remove(sys.path(d))
	if err == nil {
		sys.logf("removing %s", d)
		return nil
	}
	if entries, rerr := os.ReadDir(sys.path(d)); rerr == nil && len(entries) > 0 {
		return nil // someone else put files there since
	}
	return err
}

// cleanClusterFiles takes out what the head wrote into files that are not
// its own: the marked blocks in /etc/hosts and the SSH known hosts, and the
// ~/mpi.hosts and ~/pvm.hosts links.
func (m *Removal) cleanClusterFiles() error {
	sys := m.sys
	var errs []error
	for _, p := range []string{"/" + clusterfiles.HostsPath, "/" + sshtrust.KnownHostsPath} {
		old, ok, err := sys.read(p)
		if err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		data := markedblock.Replace(old, "", false)
		if len(bytes.TrimSpace(data)) == 0 && slices.Contains(m.rec.Absent, p) {
			sys.logf("removing %s", p)
			errs = append(errs, os.Remove(sys.path(p)))
			continue
		}
		if bytes.Equal(data, old) {
			continue
		}
		sys.logf("taking the clusterdebian block out of %s", p)
		errs = append(errs, sys.write(p, data, modeOf(sys.path(p))))
	}
	homes := []string{"/root"}
	entries, _ := os.ReadDir(sys.path("/home"))
	for _, e := range entries {
		homes = append(homes, filepath.Join("/home", e.Name()))
	}
	for _, h := range homes {
		for _, link := range []string{clusterfiles.MPIHostsLink, clusterfiles.PVMHostsLink} {
			p := sys.path(filepath.Join(h, link))
			// Only the head's links: a file the user made there is theirs.
			if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, "/etc/cluster/") {
				errs = append(errs, os.Remove(p))
			}
		}
	}
	return errors.Join(errs...)
}

func ignoreMissing(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
