package registry

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Privileged ports: only root binds below 1024. The head trusts a
// registration from such a port with the cluster's munge key
// (RegisterResponse.MungeKey), and under FromNodeRoot takes a node's
// registration, heartbeats and leave only from one; ports 512 to 1023 stay
// clear of the well-known services below.
const (
	rootPortLow  = 512
	rootPortHigh = 1024
)

// rootPortTries bounds the ports tried when some are taken.
const rootPortTries = 64

// RootTransport returns a transport whose connections come from a
// privileged port, tried at random among those free (DialRootPort), for
// the node agent's requests. Connections are not kept: a privileged port
// is freed after its request, and the head closes the connection, so its
// side, not the node's, holds the TIME_WAIT.
func RootTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableKeepAlives = true
	t.DialContext = DialRootPort
	return t
}

// DialRootPort dials addr (net.Dialer's network and address) from a
// privileged port. Without the privilege (an agent run by hand, a test)
// it dials from an ordinary port: the head then answers without the munge
// key, and under FromNodeRoot with 403, and says so in its log.
func DialRootPort(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	for range rootPortTries {
		rd := d
		rd.LocalAddr = &net.TCPAddr{Port: rootPortLow + rand.IntN(rootPortHigh-rootPortLow)}
		// A port that an earlier connection to the head left in TIME_WAIT
		// may be bound again.
		rd.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
			return errors.Join(err, serr)
		}
		conn, err := rd.DialContext(ctx, network, addr)
		switch {
		case err == nil:
			return conn, nil
		case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
			return d.DialContext(ctx, network, addr)
		case errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL):
			continue
		default:
			return nil, err
		}
	}
	return d.DialContext(ctx, network, addr)
}
