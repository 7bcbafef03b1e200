package httpboot

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
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

	"github.com/clusterdebian/clusterdebian/internal/netboot/bootfs"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
)

// guard bounds every wait; tests never assert on timing.
const guard = 30 * time.Second

// tree is the boot-file tree of dir, as the head builds it.
func tree(t testing.TB, dir string, allow ...string) *bootfs.Tree {
	t.Helper()
	tr, err := bootfs.New([]string{dir}, allow...)
	must(t, err)
	return tr
}

// within reports whether p lies strictly below dir (both clean, absolute,
// symlink-free).
func within(dir, p string) bool {
	r, err := filepath.Rel(dir, p)
	return err == nil && r != "." && r != ".." && !filepath.IsAbs(r) && !strings.HasPrefix(r, "../")
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed*31+7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type fixture struct {
	boot, ipxe, outside, efiOutside string
	secret                          []byte
	files                           map[string][]byte // "/netboot/x" or "/ipxe/x" -> content
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{
		boot:       filepath.Join(base, "netboot"),
		ipxe:       filepath.Join(base, "ipxe"),
		outside:    filepath.Join(base, "outside"),
		efiOutside: filepath.Join(base, "bootpart"),
		secret:     []byte("TOP SECRET: this must never leave the head\n"),
		files: map[string][]byte{
			"/netboot/vmlinuz":          randBytes(1, 200_000),
			"/netboot/initrd.img":       randBytes(2, 300_001),
			"/netboot/root.squashfs":    randBytes(3, 4<<20),
			"/netboot/notes.txt":        []byte("hello\n"),
			"/netboot/sub/nested.bin":   randBytes(4, 1000),
			"/ipxe/ipxe.efi":            randBytes(5, 50_000),
			"/ipxe/undionly.kpxe":       randBytes(6, 7000),
			"/netboot/has space.bin":    []byte("spaced\n"),
			"/netboot/%2e%2e":           []byte("literal name\n"), // a file really called %2e%2e
			"/netboot/vmlinuz-6.1.0-18": randBytes(7, 100),
		},
	}
	for _, d := range []string{f.boot, f.ipxe, f.outside, f.efiOutside, filepath.Join(f.boot, "emptydir")} {
		must(t, os.MkdirAll(d, 0o755))
	}
	for url, b := range f.files {
		p := f.path(url)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, b, 0o644))
	}
	must(t, os.WriteFile(filepath.Join(f.outside, "secret"), f.secret, 0o644))
	must(t, os.WriteFile(filepath.Join(f.efiOutside, "real.efi"), []byte("efi outside\n"), 0o644))
	must(t, os.Symlink("/etc/passwd", filepath.Join(f.boot, "passwd")))
	must(t, os.Symlink(filepath.Join(f.outside, "secret"), filepath.Join(f.boot, "secret")))
	must(t, os.Symlink("../outside", filepath.Join(f.boot, "outdir")))
	must(t, os.Symlink("/etc", filepath.Join(f.boot, "etc")))
	must(t, os.Symlink("../netboot/vmlinuz", filepath.Join(f.ipxe, "cross.efi"))) // other served folder: still outside
	must(t, os.Symlink("vmlinuz", filepath.Join(f.boot, "kernel-alias")))
	must(t, os.Symlink(filepath.Join(f.boot, "vmlinuz"), filepath.Join(f.boot, "kernel-abs"))) // absolute, inside
	must(t, os.Symlink("loop", filepath.Join(f.boot, "loop")))
	// Like Debian's /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi.
	must(t, os.Symlink(filepath.Join(f.efiOutside, "real.efi"), filepath.Join(f.ipxe, "linked.efi")))
	return f
}

func (f *fixture) path(url string) string {
	if rel, ok := strings.CutPrefix(url, "/netboot/"); ok {
		return filepath.Join(f.boot, filepath.FromSlash(rel))
	}
	return filepath.Join(f.ipxe, filepath.FromSlash(strings.TrimPrefix(url, "/ipxe/")))
}

type scriptCall struct {
	mac    string
	remote netip.Addr
}

type env struct {
	*fixture
	url string
	tr  *bootstage.Tracker

	mu    sync.Mutex
	calls []scriptCall
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// start serves a fixture on a real 127.0.0.1 listener.
func start(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := &env{fixture: newFixture(t), tr: bootstage.NewTracker()}
	cfg := Config{
		Netboot: tree(t, e.boot),
		IPXE:    tree(t, e.ipxe),
		Tracker: e.tr,
		Logger:  testLogger(t),
		Script: func(mac net.HardwareAddr, remote netip.Addr) (string, error) {
			e.mu.Lock()
			e.calls = append(e.calls, scriptCall{mac.String(), remote})
			e.mu.Unlock()
			switch mac.String() {
			case "52:54:00:00:00:00":
				return "", fmt.Errorf("no such node: %w", ErrUnknownNode)
			case "52:54:00:00:00:01":
				return "", errors.New("template exploded at /etc/clusterdebian/secret.tmpl")
			case "52:54:00:00:00:02":
				return "", fmt.Errorf("%s never did DHCP with the head: %w", remote, ErrForbidden)
			}
			return fmt.Sprintf("#!ipxe\necho node %s at %s\nkernel /netboot/vmlinuz\n", mac, remote), nil
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := NewHandler(cfg)
	must(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

func needCurl(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	return p
}

// curl fetches path (sent as is, no client-side normalisation) and returns
// the status code, body and response headers.
func (e *env) curl(t *testing.T, path string, args ...string) (int, []byte, http.Header) {
	t.Helper()
	curl := needCurl(t)
	dir := t.TempDir()
	body, hdrs := filepath.Join(dir, "body"), filepath.Join(dir, "headers")
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	argv := append([]string{"-sS", "--path-as-is", "-o", body, "-D", hdrs, "-w", "%{http_code}"}, args...)
	argv = append(argv, e.url+path)
	out, err := exec.CommandContext(ctx, curl, argv...).Output()
	if err != nil {
		t.Fatalf("curl %s: %v: %s", path, err, out)
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("curl %s: status %q", path, out)
	}
	b, _ := os.ReadFile(body)
	h := http.Header{}
	if raw, err := os.ReadFile(hdrs); err == nil {
		for line := range strings.SplitSeq(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
		}
	}
	return code, b, h
}

func TestArtifactsWithCurl(t *testing.T) {
	e := start(t, nil)
	for url, want := range e.files {
		curlURL := strings.ReplaceAll(url, " ", "%20")
		curlURL = strings.ReplaceAll(curlURL, "%2e", "%252e")
		code, got, h := e.curl(t, curlURL)
		if code != 200 || !bytes.Equal(got, want) {
			t.Errorf("GET %s: %d, %d bytes (want %d)", curlURL, code, len(got), len(want))
		}
		if h.Get("Content-Length") != strconv.Itoa(len(want)) {
			t.Errorf("GET %s: Content-Length %q", curlURL, h.Get("Content-Length"))
		}
	}
	if code, got, h := e.curl(t, "/netboot/vmlinuz"); code != 200 || h.Get("Content-Type") != "application/octet-stream" || len(got) == 0 {
		t.Errorf("vmlinuz Content-Type %q", h.Get("Content-Type"))
	}
	// A symlink inside the folder is followed.
	for _, p := range []string{"/netboot/kernel-alias", "/netboot/kernel-abs"} {
		if code, got, _ := e.curl(t, p); code != 200 || !bytes.Equal(got, e.files["/netboot/vmlinuz"]) {
			t.Errorf("in-folder symlink %s: %d, %d bytes", p, code, len(got))
		}
	}
}

func TestRangeAndHead(t *testing.T) {
	e := start(t, nil)
	want := e.files["/netboot/root.squashfs"]
	for _, r := range [][2]int{{0, 99}, {100, 199}, {len(want) - 10, len(want) - 1}} {
		code, got, h := e.curl(t, "/netboot/root.squashfs", "-r", fmt.Sprintf("%d-%d", r[0], r[1]))
		if code != http.StatusPartialContent || !bytes.Equal(got, want[r[0]:r[1]+1]) {
			t.Errorf("range %v: %d, %d bytes", r, code, len(got))
		}
		if cr := fmt.Sprintf("bytes %d-%d/%d", r[0], r[1], len(want)); h.Get("Content-Range") != cr {
			t.Errorf("range %v: Content-Range %q, want %q", r, h.Get("Content-Range"), cr)
		}
	}
	// With -I curl writes the headers where the body would go.
	code, got, h := e.curl(t, "/netboot/root.squashfs", "-I")
	if code != 200 || !bytes.HasPrefix(got, []byte("HTTP/1.1 200")) || len(got) > 1000 || h.Get("Content-Length") != strconv.Itoa(len(want)) || h.Get("Accept-Ranges") != "bytes" {
		t.Errorf("HEAD: %d, %d body bytes, headers %v", code, len(got), h)
	}
	// Neither a partial download nor a HEAD fetched the root file system.
	if n := e.tr.Nodes(); len(n) != 0 {
		t.Errorf("range/HEAD marked a stage: %+v", n)
	}
}

func TestEscapesRefused(t *testing.T) {
	e := start(t, nil)
	passwd, _ := os.ReadFile("/etc/passwd")
	paths := map[string]int{
		"/netboot/../../etc/passwd":                400,
		"/netboot/../outside/secret":               400,
		"/netboot/%2e%2e/%2e%2e/etc/passwd":        400,
		"/netboot/%2E%2E/outside/secret":           400,
		"/netboot/..%2f..%2fetc%2fpasswd":          400,
		"/netboot/..%2F..%2Foutside%2Fsecret":      400,
		"/netboot/..%5c..%5cetc%5cpasswd":          400,
		`/netboot/..\..\etc\passwd`:                400,
		"/netboot/sub/../../outside/secret":        400,
		"/netboot//etc/passwd":                     400,
		"/netboot/./vmlinuz":                       400,
		"/netboot/vmlinuz%00":                      400,
		"/ipxe/../netboot/vmlinuz":                 400,
		"/netboot/passwd":                          403, // symlink to /etc/passwd
		"/netboot/secret":                          403, // symlink to a file outside
		"/netboot/outdir/secret":                   403, // symlinked folder
		"/netboot/etc/passwd":                      403,
		"/ipxe/cross.efi":                          403, // into the other served folder
		"/ipxe/linked.efi":                         403, // outside unless allowed
		"/netboot/":                                404, // no listings
		"/netboot/emptydir":                        404,
		"/netboot/emptydir/":                       404,
		"/netboot/sub":                             404,
		"/netboot/missing":                         404,
		"/netboot/vmlinuz/x":                       404,
		"/etc/passwd":                              404,
		"/netboot":                                 404,
		"/api/v1/boot/../../../etc/passwd":         400,
		"/boot/../netboot/../../../etc/passwd":     400,
		"/boot/52:54:00:12:34:56.ipxe/../../x":     400,
		"/netboot/" + strings.Repeat("a", 2000):    400,
		"/netboot/..;/etc/passwd":                  404,
		"/netboot/loop":                            404,
		"/netboot/%252e%252e/%252e%252e/etc/passw": 404,
	}
	for p, want := range paths {
		code, got, _ := e.curl(t, p)
		if code != want {
			t.Errorf("GET %s: status %d, want %d", p, code, want)
		}
		if bytes.Contains(got, e.secret) || (len(passwd) > 0 && bytes.Contains(got, passwd[:min(len(passwd), 64)])) {
			t.Errorf("GET %s LEAKED a file outside the served folders", p)
		}
	}
	if code, _, _ := e.curl(t, "/netboot/vmlinuz", "-X", "POST"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", code)
	}
	if code, _, _ := e.curl(t, "/netboot/vmlinuz", "-X", "PUT", "--data-binary", "x"); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", code)
	}
}

func TestAllowSymlinkTargets(t *testing.T) {
	e := start(t, nil)
	if code, _, _ := e.curl(t, "/ipxe/linked.efi"); code != 403 {
		t.Errorf("escaping symlink without allowance: %d", code)
	}
	// Same folders, now allowing the symlink's target folder.
	h, err := NewHandler(Config{Netboot: tree(t, e.boot, e.efiOutside), IPXE: tree(t, e.ipxe, e.efiOutside),
		Script: func(net.HardwareAddr, netip.Addr) (string, error) { return "", nil }, Logger: testLogger(t)})
	must(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	e2 := &env{fixture: e.fixture, url: srv.URL}
	if code, got, _ := e2.curl(t, "/ipxe/linked.efi"); code != 200 || string(got) != "efi outside\n" {
		t.Errorf("allowed symlink: %d %q", code, got)
	}
	for _, p := range []string{"/netboot/secret", "/netboot/passwd", "/ipxe/cross.efi"} {
		if code, _, _ := e2.curl(t, p); code != 403 {
			t.Errorf("GET %s with an unrelated allowance: %d", p, code)
		}
	}
}

func TestScript(t *testing.T) {
	e := start(t, nil)
	code, got, h := e.curl(t, "/boot/52:54:00:AB:CD:EF.ipxe")
	want := "#!ipxe\necho node 52:54:00:ab:cd:ef at 127.0.0.1\nkernel /netboot/vmlinuz\n"
	if code != 200 || string(got) != want {
		t.Fatalf("script: %d %q", code, got)
	}
	if !strings.HasPrefix(h.Get("Content-Type"), "text/plain") || h.Get("Cache-Control") != "no-store" {
		t.Errorf("script headers: %v", h)
	}
	if code, got, _ := e.curl(t, "/boot/52-54-00-ab-cd-ef.ipxe"); code != 200 || string(got) != want {
		t.Errorf("hyphen form: %d %q", code, got)
	}
	n := e.tr.Nodes()
	if len(n) != 1 || n[0].MAC != "52:54:00:ab:cd:ef" || n[0].IP != "127.0.0.1" || n[0].Stage != bootstage.ScriptFetched {
		t.Errorf("stage after script: %+v", n)
	}

	for _, bad := range []string{"zz:54:00:ab:cd:ef", "5254.00ab.cdef", "52:54:00:ab:cd", "52:54:00:ab:cd:ef:01:02",
		"52:54-00:ab:cd:ef", "", "52%3a54%3a00%3aab%3acd%3aef0"} {
		if code, _, _ := e.curl(t, "/boot/"+bad+".ipxe"); code != 400 {
			t.Errorf("MAC %q: %d, want 400", bad, code)
		}
	}
	if code, _, _ := e.curl(t, "/boot/52:54:00:ab:cd:ef.txt"); code != 404 {
		t.Errorf("non-.ipxe: %d", code)
	}
	if code, _, _ := e.curl(t, "/boot/52:54:00:00:00:00.ipxe"); code != 404 {
		t.Errorf("ErrUnknownNode: %d, want 404", code)
	}
	if code, got, _ := e.curl(t, "/boot/52:54:00:00:00:02.ipxe"); code != 403 || bytes.Contains(got, []byte("DHCP")) {
		t.Errorf("ErrForbidden: %d %q, want 403 without the reason (that is for the log)", code, got)
	}
	code, got, _ = e.curl(t, "/boot/52:54:00:00:00:01.ipxe")
	if code != 500 || bytes.Contains(got, []byte("secret.tmpl")) {
		t.Errorf("script error: %d %q (must not leak the error text)", code, got)
	}
	if code, got, _ := e.curl(t, "/boot/52:54:00:ab:cd:ef.ipxe", "-I"); code != 200 || bytes.Contains(got, []byte("#!ipxe")) {
		t.Errorf("HEAD script: %d %d bytes", code, len(got))
	}
	e.mu.Lock()
	calls := len(e.calls)
	e.mu.Unlock()
	if calls != 6 { // two good, three failing, one HEAD; bad MACs never reach Script
		t.Errorf("Script called %d times, want 6", calls)
	}
	if h := e.tr.Nodes()[0].History; len(h) != 2 {
		t.Errorf("HEAD or failures marked stages: %+v", h)
	}
}

// TestGRUBScript: a GRUB script (the Secure Boot chain) is served by its
// own renderer, by the same MAC rules and errors, and marks the same stage;
// without a renderer, .grub is not found.
func TestGRUBScript(t *testing.T) {
	var called []string
	e := start(t, func(c *Config) {
		c.GRUBScript = func(mac net.HardwareAddr, remote netip.Addr) (string, error) {
			called = append(called, mac.String())
			if mac.String() == "52:54:00:00:00:02" {
				return "", fmt.Errorf("no DHCP: %w", ErrForbidden)
			}
			return "linux (http,10.99.0.1)/netboot/vmlinuz\n", nil
		}
	})
	code, got, _ := e.curl(t, "/boot/52:54:00:AB:CD:EF.grub")
	if code != 200 || string(got) != "linux (http,10.99.0.1)/netboot/vmlinuz\n" {
		t.Fatalf("GRUB script: %d %q", code, got)
	}
	if n := e.tr.Nodes(); len(n) != 1 || n[0].MAC != "52:54:00:ab:cd:ef" || n[0].Stage != bootstage.ScriptFetched || n[0].Detail != "grub" {
		t.Errorf("stage after the GRUB script: %+v", n)
	}
	if code, _, _ := e.curl(t, "/boot/52:54:00:00:00:02.grub"); code != 403 {
		t.Errorf("refused GRUB script: %d, want 403", code)
	}
	if code, _, _ := e.curl(t, "/boot/zz:54:00:ab:cd:ef.grub"); code != 400 {
		t.Errorf("bad MAC in a GRUB script name: %d, want 400", code)
	}
	e.mu.Lock()
	ipxeCalls := len(e.calls)
	e.mu.Unlock()
	if len(called) != 2 || ipxeCalls != 0 {
		t.Errorf("GRUB renderer called for %v, iPXE renderer %d times; want the two GRUB requests only", called, ipxeCalls)
	}

	plain := start(t, nil)
	if code, _, _ := plain.curl(t, "/boot/52:54:00:ab:cd:ef.grub"); code != 404 {
		t.Errorf("GRUB script without a renderer: %d, want 404", code)
	}
}

// TestStageJSON boots a pretend node through the HTTP stages with curl and
// reads them back from the API, as the harness will.
func TestStageJSON(t *testing.T) {
	e := start(t, nil)
	steps := []struct{ path, stage string }{
		{"/ipxe/ipxe.efi", bootstage.IPXELoaded}, // before the MAC is known
		{"/boot/52:54:00:12:34:56.ipxe", bootstage.ScriptFetched},
		{"/netboot/vmlinuz", bootstage.KernelFetched},
		{"/netboot/initrd.img", bootstage.InitrdFetched},
		{"/netboot/root.squashfs", bootstage.RootFetched},
	}
	for _, s := range steps {
		if code, _, _ := e.curl(t, s.path); code != 200 {
			t.Fatalf("GET %s: %d", s.path, code)
		}
	}
	// Other files and partial fetches mark nothing.
	e.curl(t, "/netboot/notes.txt")
	e.curl(t, "/netboot/vmlinuz", "-r", "0-9")

	// The server marks a stage just after the body is sent, which can be
	// after curl has exited; poll until the last stage shows (guarded).
	var nodes []bootstage.Node
	deadline := time.Now().Add(guard)
	for {
		code, body, h := e.curl(t, "/api/v1/boot")
		if code != 200 || h.Get("Content-Type") != "application/json" {
			t.Fatalf("api: %d %v", code, h)
		}
		nodes = nil
		must(t, json.Unmarshal(body, &nodes))
		if len(nodes) == 1 && nodes[0].Stage == bootstage.RootFetched {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stages never reached root-fetched: %s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	n := nodes[0]
	if n.MAC != "52:54:00:12:34:56" || n.IP != "127.0.0.1" || n.Detail != "root.squashfs" {
		t.Errorf("node = %+v", n)
	}
	var got []string
	for _, ev := range n.History {
		got = append(got, ev.Stage)
	}
	var want []string
	for _, s := range steps {
		want = append(want, s.stage)
	}
	if !slices.Equal(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}
}

func TestEmptyAPI(t *testing.T) {
	e := start(t, nil)
	if code, body, _ := e.curl(t, "/api/v1/boot"); code != 200 || string(body) != "[]\n" {
		t.Errorf("empty api: %d %q", code, body)
	}
}

// TestFolderReplaced: the handler opens the folder per request, so an image
// rebuild that swaps the whole folder (rename) is picked up at once, and a
// folder missing at startup is served once it appears.
func TestFolderReplaced(t *testing.T) {
	base := t.TempDir()
	boot := filepath.Join(base, "netboot")
	h, err := NewHandler(Config{Netboot: tree(t, boot), Logger: testLogger(t),
		Script: func(net.HardwareAddr, netip.Addr) (string, error) { return "", nil }})
	must(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	e := &env{url: srv.URL}
	if code, _, _ := e.curl(t, "/netboot/vmlinuz"); code != 404 {
		t.Errorf("missing folder: %d", code)
	}
	if code, _, _ := e.curl(t, "/ipxe/ipxe.efi"); code != 404 {
		t.Errorf("/ipxe/ with no IPXE files: %d", code)
	}
	must(t, os.Mkdir(boot, 0o755))
	must(t, os.WriteFile(filepath.Join(boot, "vmlinuz"), []byte("old"), 0o644))
	if _, got, _ := e.curl(t, "/netboot/vmlinuz"); string(got) != "old" {
		t.Errorf("got %q", got)
	}
	next := filepath.Join(base, "netboot.new")
	must(t, os.Mkdir(next, 0o755))
	must(t, os.WriteFile(filepath.Join(next, "vmlinuz"), []byte("new"), 0o644))
	must(t, os.Rename(boot, filepath.Join(base, "netboot.old")))
	must(t, os.Rename(next, boot))
	if _, got, _ := e.curl(t, "/netboot/vmlinuz"); string(got) != "new" {
		t.Errorf("after swap got %q", got)
	}
}

func TestNewHandlerErrors(t *testing.T) {
	dir := t.TempDir()
	script := func(net.HardwareAddr, netip.Addr) (string, error) { return "", nil }
	for i, c := range []Config{
		{Script: script},
		{Netboot: tree(t, dir)},
	} {
		c.Logger = slog.New(slog.DiscardHandler)
		if _, err := NewHandler(c); err == nil {
			t.Errorf("config %d accepted", i)
		}
	}
	if _, err := NewHandler(Config{Netboot: tree(t, dir), Script: script, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Errorf("minimal config: %v", err)
	}
}

func TestParseMAC(t *testing.T) {
	good := map[string]string{
		"52:54:00:ab:cd:ef": "52:54:00:ab:cd:ef",
		"52:54:00:AB:CD:EF": "52:54:00:ab:cd:ef",
		"52-54-00-ab-cd-ef": "52:54:00:ab:cd:ef",
	}
	for in, want := range good {
		hw, err := ParseMAC(in)
		if err != nil || hw.String() != want {
			t.Errorf("ParseMAC(%q) = %v, %v", in, hw, err)
		}
	}
	for _, in := range []string{"", "5254.00ab.cdef", "52:54:00:ab:cd:eg", "52:54:00:ab:cd:ef:00:01", "52-54:00-ab:cd-ef", "525400abcdef"} {
		if _, err := ParseMAC(in); err == nil {
			t.Errorf("ParseMAC(%q) accepted", in)
		}
	}
}

// readFromRecorder is a ResponseWriter that, like net/http's, implements
// io.ReaderFrom, and remembers what it was handed.
type readFromRecorder struct {
	*httptest.ResponseRecorder
	src io.Reader
}

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.src = src
	return io.Copy(r.ResponseRecorder, src)
}

// TestSendfilePath: the wrapper must hand ServeContent's *os.File (inside
// an io.LimitedReader) to the real writer, or net/http cannot use
// sendfile(2) for artifacts.
func TestSendfilePath(t *testing.T) {
	f := newFixture(t)
	h, err := NewHandler(Config{Netboot: tree(t, f.boot), Logger: slog.New(slog.DiscardHandler),
		Script: func(net.HardwareAddr, netip.Addr) (string, error) { return "", nil }})
	must(t, err)
	for _, rng := range []string{"", "bytes=10-20"} {
		rec := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
		req := httptest.NewRequest("GET", "/netboot/root.squashfs", nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		h.ServeHTTP(rec, req)
		src := rec.src
		if lr, ok := src.(*io.LimitedReader); ok {
			src = lr.R
		}
		if _, ok := src.(*os.File); !ok {
			t.Errorf("range %q: writer got %T, want *os.File (maybe in *io.LimitedReader)", rng, rec.src)
		}
	}
}

var fuzzSeeds = []string{
	"/netboot/vmlinuz", "/netboot/../../etc/passwd", "/netboot/%2e%2e/%2e%2e/etc/passwd",
	"/netboot/..%2f..%2fetc%2fpasswd", "/netboot/passwd", "/netboot/secret", "/netboot/outdir/secret",
	"/ipxe/cross.efi", "/ipxe/ipxe.efi", "/boot/52:54:00:ab:cd:ef.ipxe", "/api/v1/boot", "/netboot/%252e%252e",
	"/netboot/kernel-alias", `/netboot/..\..\etc\passwd`, "/netboot/sub/nested.bin", "http://x/netboot/../secret",
}

// FuzzRequestPath sends arbitrary request targets through the handler: it
// must never panic, never return a byte of a file outside the served
// folders, and answer 200 only with the file the path names.
func FuzzRequestPath(f *testing.F) {
	fx := newFixture(f)
	passwd, _ := os.ReadFile("/etc/passwd")
	h, err := NewHandler(Config{
		Netboot: tree(f, fx.boot), IPXE: tree(f, fx.ipxe), Logger: slog.New(slog.DiscardHandler),
		Script: func(mac net.HardwareAddr, _ netip.Addr) (string, error) { return "#!ipxe\n", nil },
	})
	must(f, err)
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			return // not a request net/http would hand us
		}
		req.RemoteAddr = "10.99.0.5:1234"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		if bytes.Contains(body, fx.secret) || (len(passwd) > 16 && bytes.Contains(body, passwd[:16])) || bytes.Contains(body, []byte("efi outside")) {
			t.Fatalf("%q leaked a file outside the served folders", target)
		}
		if rec.Code != 200 {
			return
		}
		p := req.URL.Path
		switch {
		case strings.HasPrefix(p, "/boot/"):
			if string(body) != "#!ipxe\n" {
				t.Fatalf("%q: script body %q", target, body)
			}
		case p == "/api/v1/boot":
		case strings.HasPrefix(p, "/netboot/"), strings.HasPrefix(p, "/ipxe/"):
			want, err := os.ReadFile(fx.path(p))
			if err != nil || !bytes.Equal(body, want) {
				t.Fatalf("%q: 200 with %d bytes not matching %s (%v)", target, len(body), fx.path(p), err)
			}
			real, err := filepath.EvalSymlinks(fx.path(p))
			if err != nil {
				t.Fatal(err)
			}
			rb, _ := filepath.EvalSymlinks(fx.boot)
			ri, _ := filepath.EvalSymlinks(fx.ipxe)
			if !within(rb, real) && !within(ri, real) {
				t.Fatalf("%q served %s, outside the folders", target, real)
			}
		default:
			t.Fatalf("%q: 200 for an unknown route", target)
		}
	})
}
