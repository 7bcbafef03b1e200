//go:build !contractvariant

package head

// wantPrefix is what the in-process head test (TestHeadInNetns) expects every
// node name to start with: the naming rule as users know it, node1, node12.
// It is written here, not taken from internal/contract, so that the test
// checks the contract package instead of repeating it; its twin for the
// contractvariant build is in contractvariant_test.go.
const wantPrefix = "node"
