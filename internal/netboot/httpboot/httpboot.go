// Package httpboot is the head's HTTP boot server. Once a node runs iPXE,
// everything else comes over HTTP, which is far faster and more robust
// than TFTP: the node's iPXE script, the kernel, the initramfs and the
// root squashfs. UEFI HTTP-boot firmware also fetches iPXE itself here.
//
// Routes (GET and HEAD only):
//
//	/boot/<mac>.ipxe  the node's iPXE script, rendered by Config.Script
//	/boot/<mac>.grub  the node's GRUB script (the Secure Boot chain),
//	                  rendered by Config.GRUBScript
//	/netboot/<file>   boot artifacts from Config.Netboot (Range supported)
//	/ipxe/<file>      iPXE binaries from Config.IPXE
//	/api/v1/boot      JSON array of bootstage.Node: where each node got to
//
// Each successful fetch is reported to the bootstage.Tracker. The handler
// expects to be mounted at "/" of its server, unwrapped: it does its own
// path checks on the raw request path, which a ServeMux would clean (and
// redirect) first.
package httpboot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootfs"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
)

// Config configures the handler.
type Config struct {
	// Netboot holds the netboot artifacts — vmlinuz, initrd.img, the image
	// layers and anything else put there — served under /netboot/: normally
	// a *bootfs.Tree of the boot folder, which keeps every request inside
	// it. A folder that does not exist yet (before the first image build)
	// answers 404 until it does. Required.
	Netboot fs.FS
	// IPXE holds iPXE binaries (Debian: /usr/lib/ipxe, whose ipxe.efi links
	// to /boot), served under /ipxe/ for UEFI HTTP-boot clients. Optional:
	// nil disables /ipxe/.
	IPXE fs.FS
	// Script renders the iPXE script for a node (supplied by the head).
	// Return an error wrapping ErrUnknownNode to answer 404, one wrapping
	// ErrForbidden to answer 403; any other error answers 500. Required.
	Script func(mac net.HardwareAddr, remote netip.Addr) (string, error)
	// GRUBScript renders the GRUB script for a node that boots through
	// Debian's signed GRUB (UEFI PXE, contract.GRUBScriptPath), with the
	// same errors as Script. Optional: nil answers 404 for GRUB scripts.
	GRUBScript func(mac net.HardwareAddr, remote netip.Addr) (string, error)
	// Tracker receives stage reports; nil means a private tracker (so
	// /api/v1/boot shows only what this handler saw).
	Tracker *bootstage.Tracker
	// Logger receives one line per request; nil means slog.Default().
	Logger *slog.Logger
}

// ErrUnknownNode may be returned (wrapped) by Config.Script for a MAC the
// head will not boot; the client then gets 404 instead of 500.
var ErrUnknownNode = errors.New("unknown node")

// ErrForbidden may be returned (wrapped) by Config.Script for a client that
// may not have the script (it did not boot through the head); the client
// gets 403, and the log says why.
var ErrForbidden = errors.New("forbidden")

type handler struct {
	cfg Config
	log *slog.Logger
	tr  *bootstage.Tracker
}

// NewHandler checks cfg and returns the boot server's handler.
func NewHandler(cfg Config) (http.Handler, error) {
	if cfg.Netboot == nil {
		return nil, errors.New("httpboot: Netboot not set")
	}
	if cfg.Script == nil {
		return nil, errors.New("httpboot: Script not set")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "httpboot")
	tr := cfg.Tracker
	if tr == nil {
		tr = bootstage.NewTracker()
	}
	return &handler{cfg: cfg, log: log, tr: tr}, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	remote := remoteAddr(r)
	level := h.route(sw, r, remote)
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	if sw.status >= 400 && level < slog.LevelWarn {
		level = slog.LevelWarn
	}
	h.log.Log(r.Context(), level, "request", "remote", remote.String(), "method", r.Method,
		"path", r.URL.EscapedPath(), "status", sw.status, "bytes", sw.written,
		"duration", time.Since(start).Round(time.Microsecond))
}

// route serves r and returns the level to log it at.
func (h *handler) route(w *statusWriter, r *http.Request, remote netip.Addr) slog.Level {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return slog.LevelWarn
	}
	// Encoded slashes, backslashes and NULs would let a name carry a
	// separator past the element checks below; no boot client sends them.
	raw := strings.ToLower(r.URL.EscapedPath())
	if strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") || strings.Contains(raw, "%00") {
		http.Error(w, "bad path", http.StatusBadRequest)
		return slog.LevelWarn
	}
	p := r.URL.Path
	for seg := range strings.SplitSeq(p, "/") {
		if seg == ".." || seg == "." {
			http.Error(w, "bad path", http.StatusBadRequest)
			return slog.LevelWarn
		}
	}
	switch {
	case strings.HasPrefix(p, contract.ScriptPathPrefix):
		h.serveScript(w, r, strings.TrimPrefix(p, contract.ScriptPathPrefix), remote)
	case strings.HasPrefix(p, contract.NetbootPath):
		h.serveFile(w, r, h.cfg.Netboot, strings.TrimPrefix(p, contract.NetbootPath), remote, artifactStage)
	case strings.HasPrefix(p, "/ipxe/") && h.cfg.IPXE != nil:
		h.serveFile(w, r, h.cfg.IPXE, strings.TrimPrefix(p, "/ipxe/"), remote,
			func(string) string { return bootstage.IPXELoaded })
	case p == "/api/v1/boot":
		h.serveStages(w, r)
		return slog.LevelDebug // polled; not worth a line each time
	default:
		http.NotFound(w, r)
	}
	return slog.LevelInfo
}

// artifactStage says which stage fetching a netboot file completes.
func artifactStage(rel string) string {
	base := path.Base(rel)
	switch {
	case strings.HasPrefix(base, "vmlinuz"):
		return bootstage.KernelFetched
	case strings.HasPrefix(base, "initrd"):
		return bootstage.InitrdFetched
	case strings.HasSuffix(base, ".squashfs"):
		return bootstage.RootFetched
	}
	return ""
}

// ParseMAC parses a MAC address as it appears in a script URL:
// aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff, in any case (iPXE's ${mac} and
// ${mac:hexhyp}). Only 48-bit Ethernet addresses are accepted, since those
// are what DHCP leases are keyed by.
func ParseMAC(s string) (net.HardwareAddr, error) {
	if len(s) != 17 {
		return nil, fmt.Errorf("bad MAC %q", s)
	}
	sep := s[2]
	if sep != ':' && sep != '-' {
		return nil, fmt.Errorf("bad MAC %q", s)
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("bad MAC %q", s)
	}
	return hw, nil
}

func (h *handler) serveScript(w *statusWriter, r *http.Request, name string, remote netip.Addr) {
	render, kind := h.cfg.Script, "ipxe"
	macStr, ok := strings.CutSuffix(name, contract.IPXEScriptSuffix)
	if !ok && h.cfg.GRUBScript != nil {
		render, kind = h.cfg.GRUBScript, "grub"
		macStr, ok = strings.CutSuffix(name, contract.GRUBScriptSuffix)
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	mac, err := ParseMAC(macStr)
	if err != nil {
		http.Error(w, "bad MAC address", http.StatusBadRequest)
		return
	}
	script, err := render(mac, remote)
	if err != nil {
		h.log.Warn("script", "kind", kind, "mac", mac.String(), "remote", remote.String(), "err", err)
		switch {
		case errors.Is(err, ErrUnknownNode):
			http.NotFound(w, r)
		case errors.Is(err, ErrForbidden):
			http.Error(w, "forbidden", http.StatusForbidden)
		default:
			http.Error(w, "cannot render boot script", http.StatusInternalServerError)
		}
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("Content-Length", strconv.Itoa(len(script)))
	hdr.Set("Cache-Control", "no-store") // scripts change with the node's state
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.WriteString(w, script); err != nil {
		return
	}
	h.tr.Mark(mac, remote, bootstage.ScriptFetched, kind)
}

// serveFile serves the file rel (the URL path below the route's prefix,
// percent-decoded) from files. HTTP clients are well behaved, so anything
// unusual — "..", ".", empty elements, backslashes, NUL — is refused (400)
// rather than interpreted: the tree refuses such names, and iPXE, curl and
// wget never send them. Folders are never listed.
func (h *handler) serveFile(w *statusWriter, r *http.Request, files fs.FS, rel string, remote netip.Addr, stage func(string) string) {
	if rel == "" || strings.HasSuffix(rel, "/") {
		http.NotFound(w, r)
		return
	}
	f, st, err := open(files, rel)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrInvalid):
			http.Error(w, "bad path", http.StatusBadRequest)
		case errors.Is(err, bootfs.ErrOutside), errors.Is(err, fs.ErrPermission):
			h.log.Warn("refused", "remote", remote.String(), "file", rel, "err", err)
			http.Error(w, "forbidden", http.StatusForbidden)
		default:
			http.NotFound(w, r)
		}
		return
	}
	defer f.Close()
	// Name the type ourselves: ServeContent would otherwise read the
	// first 512 bytes of every kernel to sniff it.
	ctype := mime.TypeByExtension(filepath.Ext(rel))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	// ServeContent does Range, If-Modified-Since and HEAD; a bootfs.Tree's
	// files are *os.File, which lets the copy reach sendfile(2) through
	// statusWriter.ReadFrom.
	http.ServeContent(w, r, "", st.ModTime(), f)

	// A stage is reached only by a complete download: a Range request or
	// an aborted transfer has not fetched the file.
	if r.Method == http.MethodGet && w.status == http.StatusOK && w.written == st.Size() {
		if s := stage(rel); s != "" {
			h.tr.Mark(nil, remote, s, rel)
		}
	}
}

// open opens a regular file that can seek, as http.ServeContent needs.
func open(files fs.FS, rel string) (io.ReadSeekCloser, fs.FileInfo, error) {
	f, err := files.Open(rel)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	rs, seeks := f.(io.ReadSeekCloser)
	if err != nil || !st.Mode().IsRegular() || !seeks {
		f.Close()
		return nil, nil, fs.ErrNotExist // folders, devices, FIFOs are never served
	}
	return rs, st, nil
}

func (h *handler) serveStages(w *statusWriter, r *http.Request) {
	b, err := json.Marshal(h.tr.Nodes())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// remoteAddr returns the client's address. Proxy headers are ignored on
// purpose: nodes talk to the head directly, and a forged header must not
// move another node's boot stage.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// statusWriter records the status and body bytes for logging and for
// deciding whether a download completed.
type statusWriter struct {
	http.ResponseWriter
	status  int
	written int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// ReadFrom passes the source straight to the underlying writer, which for
// net/http means sendfile(2) when the source is an *os.File (possibly
// behind an io.LimitedReader for ranges). Without it, wrapping the writer
// would silently turn every artifact download into a userspace copy.
func (w *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{w.ResponseWriter}, src)
	}
	w.written += n
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides any ReadFrom method so io.Copy cannot recurse.
type writerOnly struct{ io.Writer }
