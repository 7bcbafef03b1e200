//go:build contractvariant

package head

// wantPrefix is the naming rule of the contractvariant build, which names
// machines cd1, cd12 (internal/contract/prefix_variant.go). Run with
//
//	go test -tags contractvariant -run TestHeadInNetns ./internal/head/
//
// TestHeadInNetns then sees whether the DHCP host name, the registry, the
// iPXE script and the cluster files all follow the contract package, or
// whether some part still writes "node" itself.
const wantPrefix = "cd"
