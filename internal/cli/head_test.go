package cli

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/head"
)

// TestHeadError: the head's option errors reach the user with the flag and
// cluster.toml key to change; others pass unchanged.
func TestHeadError(t *testing.T) {
	cause := errors.New("/x has no vmlinuz")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&head.OptionError{Field: "BootDir", Err: cause}, "--boot-dir (head.boot_dir): /x has no vmlinuz"},
		{fmt.Errorf("starting: %w", &head.OptionError{Field: "Subnet", Err: cause}), "--subnet (network.subnet): /x has no vmlinuz"},
		{&head.OptionError{Field: "IPXEDir", Err: cause}, "head option IPXEDir: /x has no vmlinuz"},
		{cause, "/x has no vmlinuz"},
	} {
		got := headError(tc.err)
		if got.Error() != tc.want || !errors.Is(got, cause) {
			t.Errorf("headError(%v) = %q, want %q wrapping the cause", tc.err, got, tc.want)
		}
	}
	if headError(nil) != nil {
		t.Error("headError(nil) is not nil")
	}
	// Every field named has a flag or key, and every one of those is a field.
	fields := reflect.TypeFor[head.Options]()
	for f := range headOptionFlags {
		if _, ok := fields.FieldByName(f); !ok {
			t.Errorf("headOptionFlags names %q, which head.Options lacks", f)
		}
	}
}
