package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ptftp "github.com/pin/tftp/v3"

	"github.com/clusterdebian/clusterdebian/internal/netboot/bootfs"
)

// guard bounds every network wait; tests never assert on timing.
const guard = 30 * time.Second

// fixture is a temp TFTP root with a secret file outside it.
type fixture struct {
	root, root2, outside string
	secret               []byte
	files                map[string][]byte // name below root -> content
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{
		root:    filepath.Join(base, "root"),
		root2:   filepath.Join(base, "root2"),
		outside: filepath.Join(base, "outside"),
		secret:  []byte("TOP SECRET: this must never leave the head\n"),
		files: map[string][]byte{
			"undionly.kpxe":        randBytes(1, 74213),
			"exact.bin":            randBytes(2, 1024), // multiple of 512: needs a final empty block
			"empty":                {},
			"pxelinux.cfg/default": []byte("DEFAULT linux\n"),
			"sub/dir/ipxe.efi":     randBytes(3, 5000),
		},
	}
	for _, d := range []string{f.root, f.root2, f.outside, filepath.Join(f.root, "emptydir")} {
		must(t, os.MkdirAll(d, 0o755))
	}
	for name, b := range f.files {
		p := filepath.Join(f.root, filepath.FromSlash(name))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, b, 0o644))
	}
	must(t, os.WriteFile(filepath.Join(f.outside, "secret"), f.secret, 0o644))
	must(t, os.WriteFile(filepath.Join(f.root2, "only-in-2"), []byte("second root\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(f.root2, "undionly.kpxe"), []byte("shadowed\n"), 0o644))
	// Symlinks that escape: to a file, to a folder, relative and absolute.
	must(t, os.Symlink("/etc/passwd", filepath.Join(f.root, "passwd-link")))
	must(t, os.Symlink(filepath.Join(f.outside, "secret"), filepath.Join(f.root, "secret-link")))
	must(t, os.Symlink("../outside", filepath.Join(f.root, "outdir")))
	must(t, os.Symlink("/etc", filepath.Join(f.root, "etc")))
	// A symlink that stays inside the root is fine.
	must(t, os.Symlink("undionly.kpxe", filepath.Join(f.root, "alias.kpxe")))
	return f
}

// tree is the boot-file tree of roots, as the head builds it.
func tree(t testing.TB, roots []string, allow ...string) *bootfs.Tree {
	t.Helper()
	tr, err := bootfs.New(roots, allow...)
	must(t, err)
	return tr
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type readRecord struct {
	remote netip.Addr
	file   string
	bytes  int64
	err    error
}

// recorder collects OnRead calls. The server calls OnRead only after the
// client's final ACK, which may be after the client has exited, so tests
// wait for the count they expect.
type recorder struct {
	mu      sync.Mutex
	recs    []readRecord
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) onRead(remote netip.Addr, file string, n int64, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, readRecord{remote, file, n, err})
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// wait returns once n calls were recorded, failing the test after guard.
func (r *recorder) wait(t *testing.T, n int) []readRecord {
	t.Helper()
	timeout := time.After(guard)
	for {
		if recs := r.all(); len(recs) >= n {
			return recs
		}
		select {
		case <-r.changed:
		case <-timeout:
			t.Fatalf("OnRead called %d times, want %d", len(r.all()), n)
		}
	}
}

func (r *recorder) all() []readRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]readRecord(nil), r.recs...)
}

// start runs a server on 127.0.0.1:0 until the test ends.
func start(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveUntilEnd(t, s)
	return s, strconv.Itoa(s.Addr().(*net.UDPAddr).Port)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	return p
}

// hpaGet fetches name with tftp-hpa's client into a fresh local file and
// returns its content (nil if the client left no file) and the client's
// output. tftp-hpa exits 0 even on a TFTP error, so callers judge by the
// content and the "Error code" message.
func hpaGet(t *testing.T, port, name string) ([]byte, string) {
	t.Helper()
	tftp := needTool(t, "tftp")
	local := filepath.Join(t.TempDir(), "got")
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	// -l (literal) keeps tftp-hpa from reading "host:" out of the name.
	out, _ := exec.CommandContext(ctx, tftp, "-l", "-m", "binary", "127.0.0.1", port, "-c", "get", name, local).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("tftp get %q hung: %s", name, out)
	}
	b, err := os.ReadFile(local)
	if err != nil {
		return nil, string(out)
	}
	return b, string(out)
}

func TestGetWithTFTPHPA(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	_, port := start(t, Config{Files: tree(t, []string{f.root, f.root2}), OnRead: rec.onRead})

	cases := []struct{ ask, want string }{
		{"undionly.kpxe", "undionly.kpxe"},
		{"/undionly.kpxe", "undionly.kpxe"}, // PXE ROMs often send a leading slash
		{"exact.bin", "exact.bin"},
		{"empty", "empty"},
		{"pxelinux.cfg/default", "pxelinux.cfg/default"},
		{`sub\dir\ipxe.efi`, "sub/dir/ipxe.efi"}, // backslashes are separators
		{"sub//dir/./ipxe.efi", "sub/dir/ipxe.efi"},
		{"alias.kpxe", "undionly.kpxe"}, // symlink inside the root
	}
	for _, c := range cases {
		got, out := hpaGet(t, port, c.ask)
		if !bytes.Equal(got, f.files[c.want]) || got == nil || strings.Contains(out, "Error") {
			t.Errorf("get %q: got %d bytes, want %d (%s)", c.ask, len(got), len(f.files[c.want]), out)
		}
	}
	// Second root: used only for names the first lacks.
	if got, out := hpaGet(t, port, "only-in-2"); string(got) != "second root\n" {
		t.Errorf("second root: %q (%s)", got, out)
	}

	recs := rec.wait(t, len(cases)+1)
	// Transfers overlap at their ends, so find records by name.
	slices.SortStableFunc(recs, func(a, b readRecord) int { return strings.Compare(a.file, b.file) })
	recs = slices.DeleteFunc(recs, func(r readRecord) bool { return r.file != "undionly.kpxe" })
	if len(recs) != 2 {
		t.Fatalf("want 2 OnRead records for undionly.kpxe, got %+v", recs)
	}
	r0 := recs[0]
	if r0.err != nil || r0.file != "undionly.kpxe" || r0.bytes != int64(len(f.files["undionly.kpxe"])) || r0.remote != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("OnRead record = %+v", r0)
	}
	if recs[1].err != nil || recs[1].bytes != r0.bytes {
		t.Errorf("OnRead for /undionly.kpxe = %+v", recs[1])
	}
}

// Escape attempts must fail over the wire, with both tftp-hpa and
// pin/tftp's client, and never deliver the secret or /etc/passwd.
func TestEscapesRefused(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder()
	_, port := start(t, Config{Files: tree(t, []string{f.root, f.root2}), OnRead: rec.onRead})
	passwd, _ := os.ReadFile("/etc/passwd")

	names := []string{
		"../etc/passwd",
		"../../../../../../etc/passwd",
		"/etc/passwd", // leading slash is relative to the root: no root/etc/passwd
		"/../outside/secret",
		`..\..\etc\passwd`,
		`..\outside\secret`,
		"sub/../../outside/secret",
		"passwd-link", // symlink to /etc/passwd
		"secret-link", // symlink to a file outside
		"outdir/secret",
		"etc/passwd", // symlinked folder
		"emptydir",   // folders are not files
		"sub",
		"/",
		"nonexistent",
	}
	for _, n := range names {
		got, out := hpaGet(t, port, n)
		if len(got) > 0 {
			t.Errorf("tftp-hpa get %q returned %d bytes", n, len(got))
		}
		if bytes.Contains(got, f.secret) || (len(passwd) > 0 && bytes.Equal(got, passwd)) {
			t.Errorf("get %q LEAKED a file outside the root", n)
		}
		if !strings.Contains(out, "Error code") {
			t.Errorf("get %q: no TFTP error reported: %q", n, out)
		}

		// pin/tftp's client reports the error packet as an error.
		c, err := ptftp.NewClient("127.0.0.1:" + port)
		must(t, err)
		c.SetTimeout(5 * time.Second)
		wt, err := c.Receive(n, "octet")
		if err == nil {
			var buf bytes.Buffer
			_, err = wt.WriteTo(&buf)
			if buf.Len() > 0 {
				t.Errorf("pin client get %q returned %d bytes", n, buf.Len())
			}
		}
		if err == nil {
			t.Errorf("pin client get %q: no error", n)
		}
	}
	for _, r := range rec.wait(t, 2*len(names)) {
		if r.err == nil || r.bytes != 0 {
			t.Errorf("OnRead for a refused name: %+v", r)
		}
	}
}

// TestWriteRefused: uploads fail and leave the roots untouched.
func TestWriteRefused(t *testing.T) {
	f := newFixture(t)
	_, port := start(t, Config{Files: tree(t, []string{f.root})})
	tftp := needTool(t, "tftp")

	local := filepath.Join(t.TempDir(), "upload")
	must(t, os.WriteFile(local, []byte("evil payload\n"), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	out, _ := exec.CommandContext(ctx, tftp, "-l", "-m", "binary", "127.0.0.1", port, "-c", "put", local, "uploaded").CombinedOutput()
	if !strings.Contains(string(out), "Error code") {
		t.Errorf("tftp put: no error reported: %q", out)
	}
	if _, err := os.Stat(filepath.Join(f.root, "uploaded")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("upload created a file (stat err %v)", err)
	}

	c, err := ptftp.NewClient("127.0.0.1:" + port)
	must(t, err)
	c.SetTimeout(5 * time.Second)
	rf, err := c.Send("undionly.kpxe", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("overwrite"))
	}
	if err == nil {
		t.Error("pin client write: no error")
	}
	if got, _ := os.ReadFile(filepath.Join(f.root, "undionly.kpxe")); !bytes.Equal(got, f.files["undionly.kpxe"]) {
		t.Error("existing file modified by a write request")
	}
}

// TestOptions checks blksize and tsize with two real clients (pin/tftp's
// and curl's) and then on the wire with hand-built packets, since neither
// client exposes what was negotiated.
func TestOptions(t *testing.T) {
	f := newFixture(t)
	_, port := start(t, Config{Files: tree(t, []string{f.root})})
	want := f.files["undionly.kpxe"]

	t.Run("pin", func(t *testing.T) {
		for _, bs := range []int{512, 1432, 1468, 8192} {
			c, err := ptftp.NewClient("127.0.0.1:" + port)
			must(t, err)
			c.SetTimeout(5 * time.Second)
			c.SetBlockSize(bs)
			c.RequestTSize(true)
			wt, err := c.Receive("undionly.kpxe", "octet")
			must(t, err)
			size, ok := wt.(ptftp.IncomingTransfer).Size()
			if !ok || size != int64(len(want)) {
				t.Errorf("blksize %d: tsize = %d, %v; want %d", bs, size, ok, len(want))
			}
			var buf bytes.Buffer
			_, err = wt.WriteTo(&buf)
			must(t, err)
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("blksize %d: content differs (%d bytes)", bs, buf.Len())
			}
		}
	})

	t.Run("curl", func(t *testing.T) {
		curl := needTool(t, "curl")
		for _, bs := range []string{"512", "1468"} {
			out := filepath.Join(t.TempDir(), "got")
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			msg, err := exec.CommandContext(ctx, curl, "-sS", "--tftp-blksize", bs, "-o", out,
				"tftp://127.0.0.1:"+port+"/undionly.kpxe").CombinedOutput()
			cancel()
			if err != nil {
				t.Fatalf("curl blksize %s: %v: %s", bs, err, msg)
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
				t.Errorf("curl blksize %s: content differs (%d bytes)", bs, len(got))
			}
		}
	})

	t.Run("wire", func(t *testing.T) {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		must(t, err)
		defer conn.Close()
		must(t, conn.SetDeadline(time.Now().Add(guard)))
		srv, err := net.ResolveUDPAddr("udp4", "127.0.0.1:"+port)
		must(t, err)

		var rrq bytes.Buffer
		rrq.Write([]byte{0, 1})
		for _, s := range []string{"undionly.kpxe", "octet", "blksize", "1468", "tsize", "0"} {
			rrq.WriteString(s)
			rrq.WriteByte(0)
		}
		_, err = conn.WriteTo(rrq.Bytes(), srv)
		must(t, err)

		buf := make([]byte, 65536)
		n, from, err := conn.ReadFrom(buf)
		must(t, err)
		if binary.BigEndian.Uint16(buf) != 6 {
			t.Fatalf("want OACK, got opcode %d: %q", binary.BigEndian.Uint16(buf), buf[:n])
		}
		opts := parseOpts(buf[2:n])
		if opts["blksize"] != "1468" || opts["tsize"] != strconv.Itoa(len(want)) {
			t.Fatalf("OACK options = %v, want blksize 1468 tsize %d", opts, len(want))
		}
		_, err = conn.WriteTo([]byte{0, 4, 0, 0}, from) // ACK 0 accepts the options
		must(t, err)
		n, _, err = conn.ReadFrom(buf)
		must(t, err)
		if op, blk := binary.BigEndian.Uint16(buf), binary.BigEndian.Uint16(buf[2:]); op != 3 || blk != 1 || n-4 != 1468 {
			t.Fatalf("first DATA: opcode %d block %d len %d", op, blk, n-4)
		}
		if !bytes.Equal(buf[4:n], want[:1468]) {
			t.Error("first DATA block content differs")
		}
		// Abort politely so the server's transfer ends now.
		_, _ = conn.WriteTo([]byte{0, 5, 0, 0, 'd', 'o', 'n', 'e', 0}, from)
	})
}

func parseOpts(b []byte) map[string]string {
	parts := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	m := map[string]string{}
	for i := 0; i+1 < len(parts); i += 2 {
		m[strings.ToLower(parts[i])] = parts[i+1]
	}
	return m
}

func TestAllowSymlinkTargets(t *testing.T) {
	f := newFixture(t)
	// Like Debian's /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi.
	boot := filepath.Join(filepath.Dir(f.root), "boot")
	must(t, os.Mkdir(boot, 0o755))
	efi := randBytes(9, 3000)
	must(t, os.WriteFile(filepath.Join(boot, "ipxe.efi"), efi, 0o644))
	must(t, os.Symlink(filepath.Join(boot, "ipxe.efi"), filepath.Join(f.root2, "ipxe.efi")))

	_, strict := start(t, Config{Files: tree(t, []string{f.root, f.root2})})
	if got, out := hpaGet(t, strict, "ipxe.efi"); len(got) != 0 || !strings.Contains(out, "Error code") {
		t.Errorf("escaping symlink served without an allowed target folder: %d bytes %q", len(got), out)
	}

	_, allowed := start(t, Config{Files: tree(t, []string{f.root, f.root2}, boot)})
	if got, out := hpaGet(t, allowed, "ipxe.efi"); !bytes.Equal(got, efi) {
		t.Errorf("allowed symlink: got %d bytes (%s)", len(got), out)
	}
	// The allowance covers only that folder.
	if got, _ := hpaGet(t, allowed, "secret-link"); len(got) != 0 {
		t.Error("symlink to a folder not allowed was served")
	}
}

// TestDebianIPXE serves the real iPXE binaries of Debian's ipxe package,
// whose ipxe.efi is a symlink into /boot.
func TestDebianIPXE(t *testing.T) {
	const dir = "/usr/lib/ipxe"
	if _, err := os.Stat(filepath.Join(dir, "undionly.kpxe")); err != nil {
		t.Skip("Debian's ipxe package is not installed")
	}
	_, port := start(t, Config{Files: tree(t, []string{t.TempDir(), dir}, "/boot")})
	for _, name := range []string{"undionly.kpxe", "snponly.efi", "ipxe.efi"} {
		want, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue // not in this version of the package
		}
		if got, out := hpaGet(t, port, "/"+name); !bytes.Equal(got, want) {
			t.Errorf("%s: got %d bytes, want %d (%s)", name, len(got), len(want), out)
		}
	}
}

func TestInterface(t *testing.T) {
	f := newFixture(t)
	if _, err := New(Config{Files: tree(t, []string{f.root}), Addr: "127.0.0.1:0", Interface: "nosuchnic0"}); err == nil {
		t.Error("New with a missing interface succeeded")
	}
	s, err := New(Config{Files: tree(t, []string{f.root}), Addr: "127.0.0.1:0", Interface: "lo"})
	if err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("SO_BINDTODEVICE needs privileges: %v", err)
		}
		t.Fatal(err)
	}
	s.conn.Close()
	_, port := start(t, Config{Files: tree(t, []string{f.root}), Interface: "lo"})
	if got, out := hpaGet(t, port, "undionly.kpxe"); !bytes.Equal(got, f.files["undionly.kpxe"]) {
		t.Errorf("bound to lo: got %d bytes (%s)", len(got), out)
	}
}

func TestNewErrors(t *testing.T) {
	f := newFixture(t)
	bad := []Config{
		{Addr: "127.0.0.1:0"},
		{Files: tree(t, []string{f.root})},
		{Files: tree(t, []string{f.root}), Addr: "256.0.0.1:69"},
	}
	for i, c := range bad {
		if s, err := New(c); err == nil {
			s.conn.Close()
			t.Errorf("config %d accepted", i)
		}
	}
}

func TestServeTwice(t *testing.T) {
	f := newFixture(t)
	s, err := New(Config{Files: tree(t, []string{f.root}), Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Serve(ctx); err != nil {
		t.Fatalf("Serve with a done context: %v", err)
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Fatal("second Serve succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after Serve: %v", err)
	}
}

func TestCloseUnserved(t *testing.T) {
	f := newFixture(t)
	s, err := New(Config{Files: tree(t, []string{f.root}), Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	addr := s.Addr().String()
	must(t, s.Close())
	must(t, s.Close())
	if err := s.Serve(context.Background()); err == nil {
		t.Fatal("Serve after Close succeeded")
	}
	// The port is free again.
	c, err := net.ListenPacket("udp", addr)
	must(t, err)
	c.Close()
}

func TestCloseWhileServing(t *testing.T) {
	f := newFixture(t)
	s, port := start(t, Config{Files: tree(t, []string{f.root})})
	// A completed fetch proves Serve is running.
	if got, out := hpaGet(t, port, "empty"); got == nil {
		t.Fatalf("fetch: %s", out)
	}
	if err := s.Close(); err == nil {
		t.Fatal("Close while serving succeeded")
	}
	if got, out := hpaGet(t, port, "exact.bin"); !bytes.Equal(got, f.files["exact.bin"]) {
		t.Fatalf("server broken after refused Close: %s", out)
	}
}

// TestCleanName: the spellings PXE ROMs send become tree names; names that
// could climb out of the tree are refused before it is asked. Where each
// tree name then leads is bootfs's test; TestEscapesRefused runs the
// escapes through the protocol.
func TestCleanName(t *testing.T) {
	ok := map[string]string{
		"undionly.kpxe":         "undionly.kpxe",
		"/undionly.kpxe":        "undionly.kpxe",
		"///undionly.kpxe":      "undionly.kpxe",
		`\undionly.kpxe`:        "undionly.kpxe",
		"pxelinux.cfg/default":  "pxelinux.cfg/default",
		`sub\dir/ipxe.efi`:      "sub/dir/ipxe.efi",
		"./sub/./dir/ipxe.efi/": "sub/dir/ipxe.efi",
		"%2e%2e":                "%2e%2e", // TFTP names are not URL-encoded
	}
	for name, want := range ok {
		got, err := cleanName(name)
		if err != nil || got != want || !bootfs.ValidName(got) {
			t.Errorf("cleanName(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	for _, name := range []string{"", "/", "..", "../root/empty", "sub/../empty", `..\x`, "a\x00b",
		"undionly.kpxe\x00", strings.Repeat("a", bootfs.MaxNameLen+1)} {
		if got, err := cleanName(name); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("cleanName(%.40q) = %q, %v; want fs.ErrInvalid", name, got, err)
		}
	}
}

// TestOpen: a request name reaches the tree's file, and the tree's refusals
// reach the client as the fixed error texts.
func TestOpen(t *testing.T) {
	f := newFixture(t)
	s, err := New(Config{Files: tree(t, []string{f.root, f.root2}), Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	defer s.conn.Close()
	for name, want := range map[string][]byte{
		"/undionly.kpxe": f.files["undionly.kpxe"], `sub\dir\ipxe.efi`: f.files["sub/dir/ipxe.efi"],
		"alias.kpxe": f.files["undionly.kpxe"], "only-in-2": []byte("second root\n"),
	} {
		fl, size, err := s.open(name)
		if err != nil {
			t.Errorf("open(%q): %v", name, err)
			continue
		}
		got, _ := io.ReadAll(fl)
		fl.Close()
		if !bytes.Equal(got, want) || size != int64(len(want)) {
			t.Errorf("open(%q): %d bytes, size %d; want %d", name, len(got), size, len(want))
		}
	}
	for name, want := range map[string]string{
		"../etc/passwd": "access violation", "passwd-link": "access violation", "outdir/secret": "access violation",
		"etc/shadow-missing": "file not found", "emptydir": "file not found", "nope": "file not found",
	} {
		_, _, err := s.open(name)
		if got := wireError(err); got == nil || got.Error() != want {
			t.Errorf("open(%q): %v, sent as %v; want %q", name, err, got, want)
		}
	}
}

// fakeTransfer stands in for pin/tftp's sender so the read handler can be
// driven directly (fuzzing cannot afford a network round trip per input).
type fakeTransfer struct {
	buf  bytes.Buffer
	size int64
}

func (f *fakeTransfer) ReadFrom(r io.Reader) (int64, error) { return f.buf.ReadFrom(r) }
func (f *fakeTransfer) SetSize(n int64)                     { f.size = n }
func (f *fakeTransfer) RemoteAddr() net.UDPAddr {
	return net.UDPAddr{IP: net.IPv4(10, 99, 0, 5), Port: 2000}
}

func TestHandleReadDirect(t *testing.T) {
	f := newFixture(t)
	s, err := New(Config{Files: tree(t, []string{f.root}), Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	defer s.conn.Close()
	ft := &fakeTransfer{}
	if err := s.handleRead("/undionly.kpxe", ft); err != nil {
		t.Fatal(err)
	}
	if ft.size != int64(len(f.files["undionly.kpxe"])) || !bytes.Equal(ft.buf.Bytes(), f.files["undionly.kpxe"]) {
		t.Errorf("size %d, %d bytes", ft.size, ft.buf.Len())
	}
	if err := s.handleRead("../x", &fakeTransfer{}); err == nil || err.Error() != "access violation" {
		t.Errorf("traversal error = %v", err)
	}
	if err := s.handleRead("nope", &fakeTransfer{}); err == nil || err.Error() != "file not found" {
		t.Errorf("missing error = %v", err)
	}
}

// TestOptionalNotFound: a missing file that the config calls optional is
// logged at debug level, any other missing file as a warning; the client
// gets "file not found" either way.
func TestOptionalNotFound(t *testing.T) {
	f := newFixture(t)
	var logged bytes.Buffer
	s, err := New(Config{Files: tree(t, []string{f.root}), Addr: "127.0.0.1:0",
		Logger:   slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Optional: func(file string) bool { return file == "grub/x86_64-efi/fs.lst" }})
	must(t, err)
	defer s.conn.Close()
	for _, name := range []string{"grub/x86_64-efi/fs.lst", "grubx64.efi"} {
		if err := s.handleRead(name, &fakeTransfer{}); err == nil || err.Error() != "file not found" {
			t.Errorf("%s: %v, want file not found", name, err)
		}
	}
	out := logged.String()
	if !strings.Contains(out, `level=DEBUG msg="optional file not found"`) || !strings.Contains(out, `level=WARN msg="read failed" component=tftp remote=10.99.0.5 file=grubx64.efi`) ||
		strings.Contains(out, `level=WARN msg="read failed" component=tftp remote=10.99.0.5 file=grub/`) {
		t.Errorf("log:\n%s", out)
	}
}

var fuzzSeeds = []string{
	"undionly.kpxe", "/undionly.kpxe", "alias.kpxe", "../etc/passwd", "/etc/passwd",
	`..\..\etc\passwd`, "passwd-link", "secret-link", "outdir/secret", "etc/passwd",
	"sub/dir/ipxe.efi", `sub\dir\ipxe.efi`, "only-in-2", "emptydir", "a\x00b", "....//secret",
	"%2e%2e/secret", ".../outside/secret", "sub/dir/../../../outside/secret", "\u2025/secret",
}

// FuzzReadRequest drives the server's RRQ handler (name cleaning, the
// tree, tsize, logging, OnRead) with arbitrary names: it must never panic,
// never send a byte of a file outside the roots, and send exactly the file
// the tree holds under the cleaned name when it succeeds.
func FuzzReadRequest(f *testing.F) {
	fx := newFixture(f)
	passwd, _ := os.ReadFile("/etc/passwd")
	var mu sync.Mutex
	var lastFile string
	s, err := New(Config{
		Files:  tree(f, []string{fx.root, fx.root2}),
		Addr:   "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler),
		OnRead: func(_ netip.Addr, file string, _ int64, _ error) { mu.Lock(); lastFile = file; mu.Unlock() },
	})
	must(f, err)
	f.Cleanup(func() { s.conn.Close() })
	for _, n := range fuzzSeeds {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, name string) {
		mu.Lock()
		lastFile = "\x00unset"
		mu.Unlock()
		ft := &fakeTransfer{}
		herr := s.handleRead(name, ft)
		got := ft.buf.Bytes()
		if bytes.Contains(got, fx.secret) || (len(passwd) > 0 && bytes.Contains(got, passwd)) {
			t.Fatalf("name %q leaked a file outside the roots", name)
		}
		mu.Lock()
		if lastFile == "\x00unset" {
			t.Fatalf("OnRead not called for %q", name)
		}
		mu.Unlock()
		var want []byte
		rel, rerr := cleanName(name)
		if rerr == nil {
			want, rerr = fs.ReadFile(s.cfg.Files, rel)
		}
		if (herr == nil) != (rerr == nil) {
			t.Fatalf("name %q: handler err %v, tree err %v", name, herr, rerr)
		}
		if herr != nil {
			if len(got) != 0 {
				t.Fatalf("name %q: error %v but %d bytes sent", name, herr, len(got))
			}
			if herr.Error() != "access violation" && herr.Error() != "file not found" {
				t.Fatalf("name %q: error text %q leaks detail", name, herr)
			}
			return
		}
		if !bytes.Equal(got, want) || ft.size != int64(len(want)) {
			t.Fatalf("name %q: sent %d bytes (tsize %d), want %s (%d bytes)", name, len(got), ft.size, rel, len(want))
		}
	})
}
