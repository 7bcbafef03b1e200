package testsupport

import (
	"context"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/netns"
)

// Namespaces makes a network namespace for each prefix, named
// netns.TestPrefix, the prefix and random hex (keep prefixes to 2 bytes for
// names that also fit an interface), and deletes them at the end of the
// test. It skips the test in -short mode and where namespaces cannot be
// made (netns.Check: not root, no ip), and fails it when one cannot be
// made or deleted.
func Namespaces(t testing.TB, ctx context.Context, prefixes ...string) []*netns.NS {
	t.Helper()
	if testing.Short() {
		t.Skip("namespace test skipped in -short mode")
	}
	if err := netns.Check(); err != nil {
		t.Skipf("needs network namespaces: %v", err)
	}
	var out []*netns.NS
	for _, p := range prefixes {
		ns, err := netns.New(ctx, netns.UniqueName(netns.TestPrefix+p))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ns.Delete(context.Background()); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		out = append(out, ns)
	}
	return out
}
