// Package role tells what a running ClusterDebian system is: the head (node1,
// booted from the live medium or set up with localnode1) or a node booted from
// the network. The kernel command line says so, because the root file system
// is shared and cannot.
package role

import (
	"os"
	"strings"
)

// Role of a running system.
type Role string

const (
	Head Role = "head"
	Node Role = "node"
)

// NodeParam on the kernel command line marks a network-booted node.
const NodeParam = "clusterdebian.role=node"

// FromCmdline decides the role from a kernel command line.
func FromCmdline(cmdline string) Role {
	for _, f := range strings.Fields(cmdline) {
		if f == NodeParam {
			return Node
		}
	}
	return Head
}

// Detect reads /proc/cmdline.
func Detect() Role {
	data, _ := os.ReadFile("/proc/cmdline")
	return FromCmdline(string(data))
}

// Describe returns the role as the login banner shows it.
func (r Role) Describe() string {
	if r == Node {
		return "compute node"
	}
	return "head (node1)"
}
