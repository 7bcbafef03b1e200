//go:build contractvariant

package contract

// namePrefix is a test-only variant of the naming rule: a build with the
// tag contractvariant names machines cd1, cd12, ..., so that a test can see
// that the head, the registry, DHCP and the cluster files all take their
// names from this package (scripts/test runs it; see
// internal/head/contractvariant_test.go).
const namePrefix = "cd"
