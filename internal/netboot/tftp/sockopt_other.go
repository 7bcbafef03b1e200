//go:build !linux

package tftp

import (
	"errors"
	"syscall"
)

// bindToDevice is Linux-only; elsewhere asking for it is an error rather
// than silently listening on every interface.
func bindToDevice(iface string) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error {
		return errors.New("binding to an interface is only supported on Linux")
	}
}
