// Package role tells what a running ClusterDebian system is: the head (node1,
// booted from the live medium or set up with localnode1) or a node booted from
// the network. The kernel command line says so (contract.ParamRole), because
// the root file system is shared and cannot.
package role

import (
	"os"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// Role of a running system.
type Role string

const (
	Head Role = "head"
	Node Role = "node"
)

// ProcCmdline is where the kernel shows its command line.
const ProcCmdline = "/proc/cmdline"

// FromCmdline decides the role from a kernel command line. It looks only
// for the role parameter, so that a malformed other parameter cannot make
// a node think it is the head.
func FromCmdline(cmdline string) Role {
	for _, f := range strings.Fields(cmdline) {
		if f == contract.ParamRole+"="+contract.RoleNode {
			return Node
		}
	}
	return Head
}

// Detect reads ProcCmdline.
func Detect() Role {
	data, _ := os.ReadFile(ProcCmdline)
	return FromCmdline(string(data))
}

// Cmdline reads and parses this machine's kernel command line.
func Cmdline() (contract.Cmdline, error) {
	data, err := os.ReadFile(ProcCmdline)
	if err != nil {
		return contract.Cmdline{}, err
	}
	return contract.ParseCmdline(string(data))
}

// Describe returns the role as the login banner shows it.
func (r Role) Describe() string {
	if r == Node {
		return "compute node"
	}
	return "head (node1)"
}
