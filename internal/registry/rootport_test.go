package registry

import (
	"context"
	"net"
	"os"
	"testing"
)

// TestDialRootPort: as root, the connection comes from a privileged port;
// otherwise from an ordinary one, and it still connects.
func TestDialRootPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	conn, err := DialRootPort(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := conn.LocalAddr().(*net.TCPAddr).Port
	if root := os.Geteuid() == 0; root != (port >= rootPortLow && port < rootPortHigh) {
		t.Errorf("running as root: %v; the connection came from port %d", root, port)
	}
}
