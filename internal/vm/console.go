package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// EscapeByte detaches from a console: Ctrl-], as in telnet and virsh.
const EscapeByte = 0x1d

// ErrDetached is returned by AttachConsole when the user typed EscapeByte.
var ErrDetached = errors.New("detached")

// AttachConsole connects in and out to the serial console socket sock until
// the user types Ctrl-] (when escape is set; it is not sent to the guest),
// QEMU closes the console (the VM stopped), or ctx ends. Without escape,
// in is copied as it is, and once it ends the console's output is still
// shown until QEMU closes it or ctx ends, so that a script can watch a
// console with input from /dev/null.
//
// QEMU serves one client per console at a time; a second one waits until the
// first detaches.
func AttachConsole(ctx context.Context, sock string, in io.Reader, out io.Writer, escape bool) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	outDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, conn)
		outDone <- err
	}()
	inDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				data := buf[:n]
				detach := false
				if escape {
					if i := bytes.IndexByte(data, EscapeByte); i >= 0 {
						data, detach = data[:i], true
					}
				}
				if _, werr := conn.Write(data); werr != nil {
					inDone <- werr
					return
				}
				if detach {
					inDone <- ErrDetached
					return
				}
			}
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				inDone <- err
				return
			}
		}
	}()
	select {
	case err := <-inDone:
		if err != nil {
			return err
		}
		// Input ended: keep showing output.
		select {
		case err := <-outDone:
			return quietClose(ctx, err)
		case <-ctx.Done():
			return nil
		}
	case err := <-outDone:
		return quietClose(ctx, err)
	case <-ctx.Done():
		return nil
	}
}

// quietClose turns the end of the console's output into nil when it came
// from QEMU closing the console or from ctx.
func quietClose(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("console: %w", err)
}

// SerialTail returns the last lines of a VM's serial log, to show what the
// console last said before attaching to it.
func SerialTail(v *VMState, lines int) string {
	data, err := os.ReadFile(filepath.Join(v.Dir, SerialLogFile))
	if err != nil {
		return ""
	}
	s := strings.TrimRight(string(data), "\r\n ")
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
