package agent

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"strings"
	"time"
)

// sshPoll is how often waitSSH tries sshd, and sshSlow how long it waits
// before it says that sshd is slow to answer (once).
var (
	sshPoll = time.Second
	sshSlow = 2 * time.Minute
)

// waitSSH returns a channel that is closed once an SSH server answers at
// addr (host:port) with its identification line ("SSH-2.0-...", RFC 4253
// section 4.2). A port that only accepts, without that line, is not sshd
// ready to serve. It tries every sshPoll until ctx ends; the channel is
// then never closed.
func waitSSH(ctx context.Context, addr string, log *slog.Logger) <-chan struct{} {
	up := make(chan struct{})
	go func() {
		start := time.Now()
		warned := false
		for {
			err := sshAnswers(ctx, addr)
			if err == nil {
				log.Debug("sshd answers", "addr", addr, "after", time.Since(start).Round(time.Millisecond))
				close(up)
				return
			}
			if !warned && time.Since(start) >= sshSlow {
				log.Warn("sshd does not answer yet; the node stays joining (not in the hostfiles) until it does", "addr", addr, "err", err)
				warned = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(sshPoll):
			}
		}
	}()
	return up
}

// sshAnswers connects to addr and reads the server's identification line.
func sshAnswers(ctx context.Context, addr string) error {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := dctx.Deadline()
	conn.SetReadDeadline(deadline)
	// The server may send other lines before its version (RFC 4253 4.2).
	r := bufio.NewReaderSize(conn, 256)
	for range 8 {
		line, err := r.ReadString('\n')
		if strings.HasPrefix(line, "SSH-") {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return &net.AddrError{Err: "no SSH identification line", Addr: addr}
}
