// Package tftp is the head's read-only TFTP server. Legacy PXE ROMs can
// only fetch their first-stage loader (iPXE's undionly.kpxe or ipxe.efi)
// over TFTP; everything after that goes over HTTP, so this server is kept
// deliberately small: it serves regular files from a boot-file tree
// (internal/netboot/bootfs, which keeps every name inside it) and refuses
// writes.
//
// The protocol work (RFC 1350 plus the blksize and tsize options of RFC
// 2348/2349) is done by github.com/pin/tftp/v3.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	ptftp "github.com/pin/tftp/v3"

	"github.com/clusterdebian/clusterdebian/internal/netboot/bootfs"
)

// Config configures a Server.
type Config struct {
	// Files is the tree served, normally a *bootfs.Tree (say of
	// /var/lib/clusterdebian/tftp and /usr/lib/ipxe), which keeps every
	// request inside it. A request name is turned into a tree name first:
	// a leading slash and backslashes are separators (see cleanName).
	// Required.
	Files fs.FS
	// Addr is the UDP listen address, e.g. "10.99.0.1:69"; ":0" picks a
	// free port (see Server.Addr).
	Addr string
	// Interface, if set, binds the listening socket to this NIC
	// (SO_BINDTODEVICE), so requests arriving on other networks are never
	// answered even when Addr is a wildcard.
	Interface string
	// Timeout is the per-packet retransmission timeout; zero means the
	// library default (5 s).
	Timeout time.Duration
	// Logger receives one line per request; nil means slog.Default().
	Logger *slog.Logger
	// OnRead, if set, is called after every read request finishes, with
	// the peer address, the file name (cleaned, e.g. "undionly.kpxe" for
	// "/undionly.kpxe", or as sent if it could not be cleaned), the bytes
	// sent and nil or the failure. The head uses it to mark
	// bootstage.IPXELoaded. It runs on the transfer's goroutine and must
	// not block for long.
	OnRead func(remote netip.Addr, file string, bytes int64, err error)
}

// Server is a read-only TFTP server. Create it with New, run it with Serve.
type Server struct {
	cfg   Config
	log   *slog.Logger
	conn  net.PacketConn
	srv   *ptftp.Server
	mu    sync.Mutex
	state int // 0 new, 1 serving, 2 done (served or closed)
}

// New checks cfg and binds the listening socket, so that configuration and
// port errors surface before Serve and Addr reports the real port.
func New(cfg Config) (*Server, error) {
	if cfg.Files == nil {
		return nil, errors.New("tftp: no files configured")
	}
	if cfg.Addr == "" {
		return nil, errors.New("tftp: no listen address configured")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "tftp")

	lc := net.ListenConfig{}
	if cfg.Interface != "" {
		lc.Control = bindToDevice(cfg.Interface)
	}
	conn, err := lc.ListenPacket(context.Background(), "udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("tftp: listen %s: %w", cfg.Addr, err)
	}
	s := &Server{cfg: cfg, log: log, conn: conn}
	s.srv = ptftp.NewServer(s.handleRead, s.handleWrite)
	s.srv.SetHook(hook{log})
	if cfg.Timeout > 0 {
		s.srv.SetTimeout(cfg.Timeout)
	}
	return s, nil
}

// Addr returns the address the server is bound to.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Serve answers requests until ctx is done, then stops accepting new
// requests, waits for transfers under way to finish or time out, closes
// the socket and returns nil. It returns an error if the server fails or
// was already served or closed; a Server can be served only once.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.state != 0 {
		s.mu.Unlock()
		return errors.New("tftp: Serve called twice or after Close")
	}
	s.state = 1
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.state = 2
		s.mu.Unlock()
	}()

	s.log.Info("serving", "addr", s.Addr().String(), "files", fmt.Sprint(s.cfg.Files), "interface", s.cfg.Interface)
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.conn) }()
	select {
	case err := <-errc:
		s.conn.Close()
		return err
	case <-ctx.Done():
		// Shutdown closes the socket (ending the read loop) and waits for
		// running transfers.
		s.srv.Shutdown()
		s.conn.Close()
		<-errc
		return nil
	}
}

// Close releases the socket of a Server that will not be served (say,
// because another server failed to start). It fails while Serve runs:
// stop that by cancelling its context instead. Closing twice, or after
// Serve returned, is a no-op.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case 1:
		return errors.New("tftp: Close called while serving; cancel Serve's context")
	case 2:
		return nil
	}
	s.state = 2
	return s.conn.Close()
}

// handleRead serves one RRQ. pin/tftp calls it on a goroutine of its own
// and sends an error packet carrying the returned error's text, so the
// errors returned here are fixed, harmless texts.
func (s *Server) handleRead(name string, rf io.ReaderFrom) error {
	start := time.Now()
	var remote netip.Addr
	if ot, ok := rf.(ptftp.OutgoingTransfer); ok {
		ua := ot.RemoteAddr()
		remote = ua.AddrPort().Addr().Unmap()
	}
	file := name
	if c, err := cleanName(name); err == nil {
		file = c
	}

	n, err := s.send(name, rf)

	attrs := []any{"remote", remote.String(), "file", file, "bytes", n, "duration", time.Since(start).Round(time.Microsecond)}
	if err != nil {
		s.log.Warn("read failed", append(attrs, "err", err)...)
	} else {
		s.log.Info("read", attrs...)
	}
	if s.cfg.OnRead != nil {
		s.cfg.OnRead(remote, file, n, err)
	}
	return wireError(err)
}

// sendError marks an error that happened during the transfer itself; by
// then pin/tftp has already told the client, so handleRead must not make
// it send a second error packet.
type sendError struct{ err error }

func (e sendError) Error() string { return e.err.Error() }
func (e sendError) Unwrap() error { return e.err }

func (s *Server) send(name string, rf io.ReaderFrom) (int64, error) {
	f, size, err := s.open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	// Tell the client the size up front (tsize option) when it asked for
	// it; iPXE and many PXE ROMs use it to size their buffers.
	if ot, ok := rf.(ptftp.OutgoingTransfer); ok {
		ot.SetSize(size)
	}
	n, err := rf.ReadFrom(f)
	if err != nil {
		return n, sendError{err}
	}
	return n, nil
}

// open opens the file a request names from the tree, with its size. Only
// regular files are served.
func (s *Server) open(name string) (fs.File, int64, error) {
	rel, err := cleanName(name)
	if err != nil {
		return nil, 0, err
	}
	f, err := s.cfg.Files.Open(rel)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fs.ErrNotExist
	}
	return f, st.Size(), nil
}

// cleanName turns a requested TFTP file name into a name of the tree
// (bootfs.ValidName), or fails with fs.ErrInvalid. PXE ROMs vary: some send
// "/undionly.kpxe", Windows-derived ones send "boot\x86\file", so a leading
// slash means "relative to the root", a backslash is a separator, and empty
// and "." elements are dropped. Any ".." element is refused outright rather
// than cleaned away: no boot firmware needs it, and refusing it means no
// clever spelling can climb out of a root.
func cleanName(name string) (string, error) {
	if name == "" || len(name) > bootfs.MaxNameLen || strings.IndexByte(name, 0) >= 0 {
		return "", fs.ErrInvalid
	}
	parts := strings.Split(strings.ReplaceAll(name, `\`, "/"), "/")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", fs.ErrInvalid
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return "", fs.ErrInvalid
	}
	return strings.Join(out, "/"), nil
}

// wireError picks the text for the client's error packet.
func wireError(err error) error {
	var se sendError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return nil // already reported to the client by pin/tftp
	case errors.Is(err, fs.ErrInvalid), errors.Is(err, bootfs.ErrOutside):
		return errors.New("access violation")
	default:
		return errors.New("file not found")
	}
}

// handleWrite refuses every write request: nodes have no business
// uploading to the head, and a writable TFTP server is a classic hole.
func (s *Server) handleWrite(name string, wt io.WriterTo) error {
	var remote string
	if it, ok := wt.(ptftp.IncomingTransfer); ok {
		ua := it.RemoteAddr()
		remote = ua.AddrPort().Addr().Unmap().String()
	}
	s.log.Warn("write refused", "remote", remote, "file", name)
	return errors.New("write access denied: read-only server")
}

// hook logs requests pin/tftp drops before a handler runs (malformed
// packets); transfer outcomes are logged by handleRead instead.
type hook struct{ log *slog.Logger }

func (h hook) OnSuccess(ptftp.TransferStats) {}

func (h hook) OnFailure(st ptftp.TransferStats, err error) {
	if st.Filename == "" {
		h.log.Debug("bad request", "remote", st.RemoteAddr.String(), "err", err)
	}
}
