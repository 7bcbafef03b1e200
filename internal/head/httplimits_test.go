package head

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/httpguard"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootfs"
	"github.com/clusterdebian/clusterdebian/internal/netboot/httpboot"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
)

// The head's HTTP server is the one under internal/httpguard's limits
// (whose own tests cut off a stalled reader and let a slow but moving
// download finish): a node API request whose body trickles in after its
// headers is cut off and changes nothing.
func TestHeadCutsTricklingAPIBody(t *testing.T) {
	reg, err := registry.Open(filepath.Join(t.TempDir(), contract.RegistryFile), testNaming, time.Second, nil)
	must(t, err)
	t.Cleanup(func() { reg.Flush() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	h := &Head{log: log, handler: http.NotFoundHandler(), cluster: &cluster{reg: reg, api: registry.NewAPI(reg, token, nil, log)}}
	c := dialGuarded(t, h, httpguard.Limits{Body: 300 * time.Millisecond})
	defer c.Close()
	body := `{"mac":"52:54:00:00:00:07","ip":"10.99.0.7","cores":1}`
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: head\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		registry.PathRegister, token, len(body))
	// All but the last byte, then nothing: the head must not wait for it.
	io.WriteString(c, body[:len(body)-1])
	c.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the head did not answer a stalled body (reached the test's guard): %v", err)
	}
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(msg), "did not arrive in time") {
		t.Errorf("answer %d %q, want 408 saying the body came too slowly", resp.StatusCode, msg)
	}
	if ns := reg.Nodes(); len(ns) != 0 {
		t.Errorf("a cut-off registration registered %v", ns)
	}
}

// A node that asks for an image layer and then reads nothing is cut off
// by the head: through the boot handler's own writer (which keeps
// sendfile), the download ends with less than the layer sent, instead of
// holding the connection for ever.
func TestHeadCutsStalledDownload(t *testing.T) {
	const size = 256 << 20 // more than loopback's socket buffers hold
	bootDir := t.TempDir()
	f, err := os.Create(filepath.Join(bootDir, contract.BaseLayer))
	must(t, err)
	must(t, f.Truncate(size))
	f.Close()
	files, err := bootfs.New([]string{bootDir})
	must(t, err)
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	boot, err := httpboot.NewHandler(httpboot.Config{Netboot: files, Logger: log,
		Script: func(net.HardwareAddr, netip.Addr) (string, error) { return "", httpboot.ErrUnknownNode }})
	must(t, err)
	h := &Head{log: log, handler: boot}
	c := dialGuarded(t, h, httpguard.Limits{Stall: 300 * time.Millisecond})
	defer c.Close()
	fmt.Fprintf(c, "GET %s%s HTTP/1.1\r\nHost: head\r\n\r\n", contract.NetbootPath, contract.BaseLayer)
	// The boot handler logs each request when it ends: wait for that
	// line, reading nothing meanwhile.
	waitFor(t, "the stalled download to end", func() bool { return strings.Contains(logs.String(), contract.BaseLayer) })
	t.Logf("%s", logs.String())
	c.SetReadDeadline(time.Now().Add(time.Minute))
	got, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the head left the stalled connection open")
	}
	if got >= size {
		t.Errorf("the stalled client still got %d bytes, the whole layer", got)
	}
}

// dialGuarded serves h's HTTP server with limits on loopback and returns
// a connection to it; the server closes with the test.
func dialGuarded(t *testing.T, h *Head, limits httpguard.Limits) net.Conn {
	t.Helper()
	srv := h.httpServer(limits)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	must(t, err)
	return c
}
