package cli

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
)

// TestHeadInputs: the head's errors about its options reach the user with
// the flag and cluster.toml key to change; others pass unchanged.
func TestHeadInputs(t *testing.T) {
	cause := errors.New("/x has no vmlinuz")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{inputerr.New(head.InputBootDir, "", cause), "--boot-dir / head.boot_dir: /x has no vmlinuz"},
		{fmt.Errorf("starting: %w", inputerr.New(head.InputSubnet, "", cause)), "starting: --subnet / network.subnet: /x has no vmlinuz"},
		{inputerr.New(head.InputIPXEDir, "", cause), "IPXEDir: /x has no vmlinuz"},
		{cause, "/x has no vmlinuz"},
	} {
		got := headInputs.explain(tc.err)
		if got.Error() != tc.want || !errors.Is(got, cause) {
			t.Errorf("explain(%v) = %q, want %q wrapping the cause", tc.err, got, tc.want)
		}
	}
	if headInputs.explain(nil) != nil {
		t.Error("explain(nil) is not nil")
	}
	// Every head input named is a field of head.Options.
	fields := reflect.TypeFor[head.Options]()
	for in := range headInputs {
		if strings.Contains(in, ".") {
			continue // a cluster.toml key
		}
		if _, ok := fields.FieldByName(in); !ok {
			t.Errorf("headInputs names %q, which head.Options lacks", in)
		}
	}
}
