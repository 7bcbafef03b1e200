package vm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"time"
)

// The QEMU guest agent (qemu-ga) speaks QMP-style JSON over a virtio-serial
// port, which QEMU exposes on the host as the unix socket Spec.Dir/qga.sock.
// Unlike QMP there is no greeting and no session: the socket is a plain byte
// pipe to the agent, which may hold half a request or stale answers left by
// a client that gave up. So every conversation starts with
// guest-sync-delimited: the client sends a 0xFF byte (the agent's parser
// drops any partial input on it), then the sync with a random id; the agent
// answers with a 0xFF byte followed by {"return": id}. Everything before that
// 0xFF is stale and skipped, and after the matching id the answers are ours,
// in order.

// QGASyncTimeout bounds the wait for the agent's answer to the sync. No
// answer means no agent runs in the guest (yet): QEMU accepts connections
// on the host side whether or not anything listens in the guest.
var QGASyncTimeout = 5 * time.Second

// ErrNoAgent is returned when the guest agent does not answer the sync.
var ErrNoAgent = errors.New("the QEMU guest agent does not answer (not running in the guest, or the guest is still booting)")

// QGAError is an error the agent returned for a command.
type QGAError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QGAError) Error() string {
	return fmt.Sprintf("guest agent: %s: %s (%s)", e.Command, e.Desc, e.Class)
}

// qgaConn is one synchronised conversation with an agent.
type qgaConn struct {
	conn net.Conn
	dec  *json.Decoder
}

// qgaDial connects to the agent socket and synchronises with the agent. The
// connection is closed when ctx is done, which unblocks any read.
func qgaDial(ctx context.Context, sock string) (*qgaConn, func(), error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, nil, fmt.Errorf("guest agent socket: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	closeFn := func() { stop(); conn.Close() }
	c := &qgaConn{conn: conn}
	if err := c.sync(ctx); err != nil {
		closeFn()
		return nil, nil, err
	}
	return c, closeFn, nil
}

func (c *qgaConn) sync(ctx context.Context) error {
	id := rand.Int64N(1 << 50) // JSON numbers stay exact below 2^53
	deadline := time.Now().Add(QGASyncTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.conn.SetDeadline(deadline)
	defer c.conn.SetDeadline(time.Time{})
	req, _ := json.Marshal(map[string]any{"execute": "guest-sync-delimited", "arguments": map[string]any{"id": id}})
	if _, err := c.conn.Write(append([]byte{0xff}, req...)); err != nil {
		return c.ioErr(ctx, err)
	}
	br := bufio.NewReader(c.conn)
	atDelimiter := false // ffReader consumed a 0xFF already
	for {
		// Skip to the delimiter: anything before it is stale.
		if !atDelimiter {
			if _, err := br.ReadBytes(0xff); err != nil {
				return c.ioErr(ctx, err)
			}
		}
		atDelimiter = false
		// The agent's answers carry no 0xFF of their own (JSON is UTF-8),
		// so a later 0xFF can only be another delimiter: what came before it
		// is stale too.
		c.dec = json.NewDecoder(&ffReader{r: br})
		for {
			var resp struct {
				Return *json.Number `json:"return"`
			}
			err := c.dec.Decode(&resp)
			if errors.Is(err, errDelimiter) {
				atDelimiter = true
				break
			}
			var se *json.SyntaxError
			var te *json.UnmarshalTypeError
			if errors.As(err, &se) || errors.As(err, &te) {
				if te != nil {
					continue // a stale answer that is not a number
				}
				break // garbage: resynchronise on the next delimiter
			}
			if err != nil {
				return c.ioErr(ctx, err)
			}
			if resp.Return != nil && resp.Return.String() == strconv.FormatInt(id, 10) {
				// The decoder keeps reading from br, which holds whatever
				// followed the answer.
				return nil
			}
		}
	}
}

// errDelimiter is what ffReader reports on a 0xFF byte.
var errDelimiter = errors.New("qga: delimiter")

// ffReader passes bytes through up to a 0xFF byte, which it consumes and
// reports as errDelimiter.
type ffReader struct{ r *bufio.Reader }

func (f *ffReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for n < len(p) {
		if n > 0 && f.r.Buffered() == 0 {
			break // do not block with data in hand
		}
		b, err := f.r.ReadByte()
		if err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		if b == 0xff {
			if n > 0 {
				f.r.UnreadByte()
				return n, nil
			}
			return 0, errDelimiter
		}
		p[n] = b
		n++
	}
	return n, nil
}

func (c *qgaConn) ioErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("guest agent: %w", ctx.Err())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, io.EOF) {
		return ErrNoAgent
	}
	return fmt.Errorf("guest agent: %w", err)
}

// call runs one command and decodes its "return" into out (may be nil).
func (c *qgaConn) call(ctx context.Context, command string, args any, out any) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := c.conn.Write(data); err != nil {
		return c.callErr(ctx, command, err)
	}
	var resp struct {
		Return json.RawMessage `json:"return"`
		Error  *QGAError       `json:"error"`
	}
	if err := c.dec.Decode(&resp); err != nil {
		return c.callErr(ctx, command, err)
	}
	if resp.Error != nil {
		resp.Error.Command = command
		return resp.Error
	}
	if out != nil {
		if err := json.Unmarshal(resp.Return, out); err != nil {
			return fmt.Errorf("guest agent: %s: bad answer %s: %w", command, resp.Return, err)
		}
	}
	return nil
}

func (c *qgaConn) callErr(ctx context.Context, command string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("guest agent: %s: %w", command, ctx.Err())
	}
	return fmt.Errorf("guest agent: %s: %w", command, err)
}

// QGAPing checks that the guest agent behind sock answers.
func QGAPing(ctx context.Context, sock string) error {
	c, closeFn, err := qgaDial(ctx, sock)
	if err != nil {
		return err
	}
	defer closeFn()
	return c.call(ctx, "guest-ping", nil, nil)
}

// QGAHostname returns the guest's host name.
func QGAHostname(ctx context.Context, sock string) (string, error) {
	c, closeFn, err := qgaDial(ctx, sock)
	if err != nil {
		return "", err
	}
	defer closeFn()
	var r struct {
		HostName string `json:"host-name"`
	}
	if err := c.call(ctx, "guest-get-host-name", nil, &r); err != nil {
		return "", err
	}
	return r.HostName, nil
}

// qgaPollInterval is how often QGAExec asks whether the command has exited;
// it starts short so quick commands return quickly and grows to this.
var qgaPollInterval = 500 * time.Millisecond

// QGAExec runs path with args in the guest, as the agent's user (root), and
// returns its output and exit code; a command killed by a signal gets
// 128+signal, as in a shell. path is looked up in the agent's PATH; no shell
// is involved, so for pipes or redirections run /bin/sh with -c.
//
// When ctx ends first the command keeps running in the guest: the agent has
// no way to stop it.
func QGAExec(ctx context.Context, sock string, path string, args []string) (stdout, stderr []byte, exitCode int, err error) {
	c, closeFn, err := qgaDial(ctx, sock)
	if err != nil {
		return nil, nil, -1, err
	}
	defer closeFn()
	if args == nil {
		args = []string{}
	}
	var started struct {
		PID int `json:"pid"`
	}
	if err := c.call(ctx, "guest-exec", map[string]any{"path": path, "arg": args, "capture-output": true}, &started); err != nil {
		return nil, nil, -1, err
	}
	wait := 50 * time.Millisecond
	for {
		var st struct {
			Exited       bool   `json:"exited"`
			ExitCode     *int   `json:"exitcode"`
			Signal       *int   `json:"signal"`
			OutData      []byte `json:"out-data"` // base64 in JSON
			ErrData      []byte `json:"err-data"`
			OutTruncated bool   `json:"out-truncated"`
			ErrTruncated bool   `json:"err-truncated"`
		}
		if err := c.call(ctx, "guest-exec-status", map[string]any{"pid": started.PID}, &st); err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w; %s may still run in the guest as pid %d", err, path, started.PID)
			}
			return nil, nil, -1, err
		}
		if st.Exited {
			code := 0
			switch {
			case st.Signal != nil && *st.Signal != 0:
				code = 128 + *st.Signal
			case st.ExitCode != nil:
				code = *st.ExitCode
			}
			if st.OutTruncated || st.ErrTruncated {
				err = fmt.Errorf("guest agent: the output of %s was truncated (the agent keeps at most 16 MiB)", path)
			}
			return st.OutData, st.ErrData, code, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, -1, fmt.Errorf("guest agent: %s: %w; it may still run in the guest as pid %d", path, ctx.Err(), started.PID)
		case <-time.After(wait):
		}
		wait = min(wait*2, qgaPollInterval)
	}
}
