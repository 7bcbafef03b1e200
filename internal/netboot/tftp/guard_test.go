package tftp

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// scriptConn is a PacketConn that delivers scripted datagrams and records
// what is written.
type scriptConn struct {
	in      chan scripted
	mu      sync.Mutex
	written [][]byte
}

type scripted struct {
	b    []byte
	from net.Addr
}

func (c *scriptConn) ReadFrom(b []byte) (int, net.Addr, error) {
	p, ok := <-c.in
	if !ok {
		return 0, nil, net.ErrClosed
	}
	return copy(b, p.b), p.from, nil
}

func (c *scriptConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.written = append(c.written, append([]byte(nil), b...))
	return len(b), nil
}

func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// TestGuardConn: the guard drops only an ERROR to a client that sent one in
// the same transfer, and reports what it saw.
func TestGuardConn(t *testing.T) {
	sc := &scriptConn{in: make(chan scripted, 8)}
	g := newGuardConn(sc)
	a := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 2000}
	b := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 3), Port: 2000}
	buf := make([]byte, 1500)
	read := func(p []byte, from net.Addr) {
		sc.in <- scripted{p, from}
		if _, _, err := g.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
	}
	errPkt := errorPacket(1, "file not found")

	read(rrq("x", "TSIZE", "0"), a)
	read(rrq("x"), b)
	g.WriteTo([]byte{0, opDATA, 0, 1, 'h', 'i'}, a)
	read(errorPacket(8, "aborted"), a)
	g.WriteTo(errPkt, a) // dropped: a sent ERROR
	g.WriteTo(errPkt, b) // sent: b did not
	if len(sc.written) != 2 || !bytes.Equal(sc.written[1], errPkt) {
		t.Errorf("written %q, want DATA to a and the ERROR to b only", sc.written)
	}
	st := g.finish(a)
	if !st.tsize || !st.dataSent || !st.aborted || st.code != 8 || st.msg != "aborted" {
		t.Errorf("state of a: %+v", st)
	}
	if st := g.finish(b); st.tsize || st.dataSent || st.aborted {
		t.Errorf("state of b: %+v", st)
	}
	// Forgotten: a new transfer from a's port may get an ERROR again.
	g.WriteTo(errPkt, a)
	if len(sc.written) != 3 {
		t.Errorf("ERROR after finish was dropped")
	}
	// A request after the client aborted starts a new transfer.
	read(rrq("y"), a)
	read(errorPacket(0, ""), a)
	read(rrq("y"), a)
	g.WriteTo(errPkt, a)
	if len(sc.written) != 4 {
		t.Errorf("ERROR in a new transfer from the same port was dropped")
	}
	if asksSize([]byte("f\x00octet\x00tsize")) || !asksSize([]byte("f\x00octet\x00blksize\x00512\x00tsize\x000\x00")) {
		t.Error("asksSize")
	}
	if c, m := parseError([]byte{0, 5, 0, 8}); c != 8 || m != "" {
		t.Errorf("parseError of a bare ERROR: %d %q", c, m)
	}
}

// panicConn panics on its first read, as pin/tftp's single-port loop does
// when a packet meets a transfer that just closed its channel.
type panicConn struct {
	net.PacketConn
	once sync.Once
}

func (p *panicConn) ReadFrom(b []byte) (n int, a net.Addr, err error) {
	p.once.Do(func() { panic(errors.New("send on closed channel (simulated)")) })
	return p.PacketConn.ReadFrom(b)
}

// TestServeSurvivesLoopPanic: a panic in the library's read loop is logged
// and the loop runs again; the server keeps serving.
func TestServeSurvivesLoopPanic(t *testing.T) {
	f := newFixture(t)
	logs := newLogCapture(t)
	s, err := New(Config{Files: tree(t, []string{f.root}), Addr: "127.0.0.1:0", Logger: slog.New(logs)})
	must(t, err)
	s.guard.PacketConn = &panicConn{PacketConn: s.conn}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	port := strconv.Itoa(s.Addr().(*net.UDPAddr).Port)
	if got, out := hpaGet(t, port, "exact.bin"); !bytes.Equal(got, f.files["exact.bin"]) {
		t.Fatalf("fetch after the panic: %s", out)
	}
	logs.await(t, 0, "tftp read loop panicked; restarting it")
}
