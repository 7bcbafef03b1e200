package tftp

import (
	"fmt"
	"syscall"
)

// bindToDevice returns a net.ListenConfig.Control function that sets
// SO_BINDTODEVICE, so the socket only sees packets that arrived on iface.
// It needs CAP_NET_RAW (the head runs as root).
func bindToDevice(iface string) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, iface)
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("bind to interface %s: %w", iface, serr)
		}
		return nil
	}
}
