package head

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/httpguard"
	"github.com/clusterdebian/clusterdebian/internal/registry"
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
	srv := h.httpServer(httpguard.Limits{Body: 300 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c, err := net.Dial("tcp", ln.Addr().String())
	must(t, err)
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
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), "timeout") {
		t.Errorf("answer %d %q, want 400 naming the timeout", resp.StatusCode, msg)
	}
	if ns := reg.Nodes(); len(ns) != 0 {
		t.Errorf("a cut-off registration registered %v", ns)
	}
}
