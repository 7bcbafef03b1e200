//go:build !contractvariant

package contract

// namePrefix starts every node name: node1, node12.
const namePrefix = "node"
