package agent

import (
	"net"
	"os"
)

// Notify sends state (such as "READY=1") to systemd's notification socket
// named by $NOTIFY_SOCKET, as sd_notify(3) does; without the variable (not
// started by systemd, or not Type=notify) it does nothing. It is written
// here rather than linked from libsystemd because the binary is static.
//
// The node unit is Type=notify so that ssh.service, ordered after it,
// starts only once the host certificate is on disk: sshd reads it only at
// start. A socket name starting with "@" is in the abstract namespace; Go's
// net package maps that "@" to the leading NUL byte Linux expects.
func Notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
