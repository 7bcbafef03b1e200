// Package tftp is the head's read-only TFTP server. Legacy PXE ROMs can
// only fetch their first-stage loader (iPXE's undionly.kpxe or ipxe.efi)
// over TFTP; everything after that goes over HTTP, so this server is kept
// deliberately small: it serves regular files from a boot-file tree
// (internal/netboot/bootfs, which keeps every name inside it) and refuses
// writes.
//
// The protocol work (RFC 1350 plus the blksize and tsize options of RFC
// 2348/2349) is done by github.com/pin/tftp/v3, in its single-port mode:
// every transfer goes through the one socket New binds (to the cluster
// interface), wrapped so this package sees each datagram. Three things are
// fixed around the library:
//
//   - No packet is bigger than the path MTU. The library's own clamp
//     (interface MTU − 28) forgets the 4-byte TFTP header, so a DATA packet
//     of the largest block it allows is 4 bytes too big and leaves as two IP
//     fragments, which switches and PXE ROMs may drop. The block size is
//     capped at MTU − 20 (IPv4) − 8 (UDP) − 4 (TFTP) instead.
//   - An ERROR is never answered with an ERROR (RFC 1350). UEFI firmware
//     asks for a file's size (tsize) and then ends the transfer with ERROR
//     8; the library's sender answers with an ERROR of its own, which the
//     socket wrapper drops.
//   - That size probe is logged as what it is (info), not as a failed read,
//     and is not reported to OnRead.
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
	// MTU is the largest IP packet, in bytes, that may be sent to a client
	// (the path MTU; on one segment, the interface's MTU). DATA blocks are
	// sized so that no packet is bigger: at most MTU − 32 bytes (IPv4, UDP
	// and TFTP headers), and never less than TFTP's 512. Zero means the MTU
	// of Interface, else of the interface holding Addr's address, else 1500.
	MTU int
	// Timeout is the per-packet retransmission timeout; zero means the
	// library default (5 s).
	Timeout time.Duration
	// Logger receives one line per request; nil means slog.Default().
	Logger *slog.Logger
	// OnRead, if set, is called after every read request finishes, with
	// the peer address, the file name (cleaned, e.g. "undionly.kpxe" for
	// "/undionly.kpxe", or as sent if it could not be cleaned), the bytes
	// sent and nil or the failure. The head uses it to mark
	// bootstage.IPXELoaded. A size probe (the client asked for the size
	// and ended the transfer before the first block, as UEFI firmware does
	// before every download) is not a read and is not reported. It runs on
	// the transfer's goroutine and must not block for long.
	OnRead func(remote netip.Addr, file string, bytes int64, err error)
	// Optional, if set, names the files that boot loaders ask for in case
	// they are there (shim's revocation lists, GRUB's module lists): a
	// read of one that is not found is logged at debug level, not as a
	// warning.
	Optional func(file string) bool
}

// Server is a read-only TFTP server. Create it with New, run it with Serve.
type Server struct {
	cfg   Config
	log   *slog.Logger
	conn  net.PacketConn
	guard *guardConn
	srv   *ptftp.Server
	// blksize is the largest DATA block sent, from the MTU.
	blksize int
	mu      sync.Mutex
	state   int // 0 new, 1 serving, 2 done (served or closed)
}

// Block sizes: TFTP's default (RFC 1350) and the largest RFC 2348 allows.
const (
	minBlockSize = 512
	maxBlockSize = 65464
	// headerBytes is what an IPv4 packet adds to a DATA block: IPv4 (20),
	// UDP (8) and TFTP (4) headers.
	headerBytes = 20 + 8 + 4
	defaultMTU  = 1500
)

// BlockSize returns the largest DATA block the server sends: MTU − 32,
// within 512 and 65464.
func (s *Server) BlockSize() int { return s.blksize }

// blockSizeFor returns the largest block whose DATA packet fits mtu.
func blockSizeFor(mtu int) int {
	return min(max(mtu-headerBytes, minBlockSize), maxBlockSize)
}

// linkMTU returns the MTU to size blocks for: cfg.MTU, else that of the
// interface named or of the one holding the listen address.
func linkMTU(cfg Config, local net.Addr) (int, error) {
	if cfg.MTU > 0 {
		return cfg.MTU, nil
	}
	if cfg.Interface != "" {
		ifi, err := net.InterfaceByName(cfg.Interface)
		if err != nil {
			return 0, fmt.Errorf("tftp: interface %s: %w", cfg.Interface, err)
		}
		return ifi.MTU, nil
	}
	if ua, ok := local.(*net.UDPAddr); ok && ua.IP != nil && !ua.IP.IsUnspecified() {
		ifs, _ := net.Interfaces()
		for _, ifi := range ifs {
			addrs, _ := ifi.Addrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ua.IP) {
					return ifi.MTU, nil
				}
			}
		}
	}
	return defaultMTU, nil
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
	mtu, err := linkMTU(cfg, conn.LocalAddr())
	if err != nil {
		conn.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, conn: conn, guard: newGuardConn(conn), blksize: blockSizeFor(mtu)}
	s.srv = ptftp.NewServer(s.handleRead, s.handleWrite)
	s.srv.SetHook(hook{log})
	// Single-port mode: all transfers on our socket (bound to the
	// interface, wrapped by the guard) rather than on a new unbound socket
	// each.
	s.srv.EnableSinglePort()
	// Our cap replaces the library's MTU clamp, which is 4 bytes too big.
	// SetBlockSize ignores 512 (the library's default then applies, which
	// is 512 too).
	s.srv.SetBlockSizeNegotiation(false)
	s.srv.SetBlockSize(s.blksize)
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

	s.log.Info("serving", "addr", s.Addr().String(), "files", fmt.Sprint(s.cfg.Files), "interface", s.cfg.Interface,
		"max_blksize", s.blksize)
	errc := make(chan error, 1)
	go func() { errc <- s.serveLoop() }()
	select {
	case err := <-errc:
		s.conn.Close()
		return err
	case <-ctx.Done():
		// In single-port mode Shutdown stops the read loop; the loop lets
		// running transfers finish, then closes the socket and returns.
		s.srv.Shutdown()
		<-errc
		s.conn.Close()
		return nil
	}
}

// serveLoop runs the library's read loop, and runs it again should it
// panic. In single-port mode the loop hands each packet to its transfer
// through a channel that the transfer closes when it ends; a packet that
// arrives for a transfer at the very moment it ends can hit the closed
// channel, which panics. That loses only that packet (its transfer is
// over); the head must not go down for it.
func (s *Server) serveLoop() error {
	for {
		panicked, err := s.serveOnce()
		if !panicked {
			return err
		}
	}
}

func (s *Server) serveOnce() (panicked bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("tftp read loop panicked; restarting it", "panic", r)
			panicked, err = true, nil
		}
	}()
	return false, s.srv.Serve(s.guard)
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
	var peer net.Addr
	if ot, ok := rf.(ptftp.OutgoingTransfer); ok {
		ua := ot.RemoteAddr()
		remote = ua.AddrPort().Addr().Unmap()
		peer = &ua
	}
	file := name
	if c, err := cleanName(name); err == nil {
		file = c
	}

	n, size, err := s.send(name, rf)
	var seen peerState
	if peer != nil && s.guard != nil {
		seen = s.guard.finish(peer)
	}

	attrs := []any{"remote", remote.String(), "file", file, "bytes", n, "duration", time.Since(start).Round(time.Microsecond)}
	switch {
	case err != nil && seen.aborted && seen.tsize && !seen.dataSent:
		// UEFI firmware learns the size first and fetches the file in a
		// second transfer: nothing failed, and nothing was loaded.
		s.log.Info("size probe", "remote", remote.String(), "file", file, "size", size,
			"client_error_code", seen.code, "client_error", seen.msg)
		return nil
	case err != nil && seen.aborted:
		s.log.Warn("read aborted by the client", append(attrs, "client_error_code", seen.code, "client_error", seen.msg)...)
	case err != nil && errors.Is(err, fs.ErrNotExist) && s.cfg.Optional != nil && s.cfg.Optional(file):
		s.log.Debug("optional file not found", attrs...)
	case err != nil:
		s.log.Warn("read failed", append(attrs, "err", err)...)
	default:
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

// send sends the file name through rf and returns the bytes sent and the
// file's size.
func (s *Server) send(name string, rf io.ReaderFrom) (n, size int64, err error) {
	f, size, err := s.open(name)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	// Tell the client the size up front (tsize option) when it asked for
	// it; iPXE and many PXE ROMs use it to size their buffers.
	if ot, ok := rf.(ptftp.OutgoingTransfer); ok {
		ot.SetSize(size)
	}
	n, err = rf.ReadFrom(f)
	if err != nil {
		return n, size, sendError{err}
	}
	return n, size, nil
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
		if s.guard != nil {
			s.guard.finish(&ua)
		}
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
