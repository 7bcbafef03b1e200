package httpguard

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// guard bounds every wait of these tests: reaching it is a failure (the
// server held on to a client it should have cut off), never a pass.
const guard = 60 * time.Second

// serve runs the handler under l on loopback; the server is closed at the
// end of the test.
func serve(t *testing.T, l Limits, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := l.Server(h, nil)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// bigFile makes a sparse file of size bytes.
func bigFile(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "layer.squashfs")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

// fileHandler serves path with http.ServeContent, as the boot and swarm
// servers do, through a counting writer that keeps ReadFrom (as theirs
// do), and sends the bytes written to done when the handler returns.
func fileHandler(path string, done chan<- int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		st, _ := f.Stat()
		cw := &counter{ResponseWriter: w}
		http.ServeContent(cw, r, "", st.ModTime(), f)
		done <- cw.n
	})
}

type counter struct {
	http.ResponseWriter
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *counter) ReadFrom(src io.Reader) (int64, error) {
	n, err := c.ResponseWriter.(io.ReaderFrom).ReadFrom(src)
	c.n += n
	return n, err
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A client that sends its headers and then trickles the body, a byte at a
// time, is cut off after Limits.Body: the handler's read fails with a
// deadline error long before the body is whole.
func TestTricklingBodyIsCutOff(t *testing.T) {
	const size = 100000
	readErr := make(chan error, 1)
	addr := serve(t, Limits{Body: 500 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(http.MaxBytesReader(w, r.Body, size))
		readErr <- err
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	}))
	c := dial(t, addr)
	fmt.Fprintf(c, "POST /api/v1/nodes/register HTTP/1.1\r\nHost: head\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", size)
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for n < size {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := c.Write([]byte{' '}); err != nil {
				return
			}
			n++
		}
	}()
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the handler's read ended with %v, want a deadline error", err)
		}
	case <-time.After(guard):
		t.Fatal("a trickled body held the handler")
	}
	close(stop)
	if n := <-sent; n >= size {
		t.Errorf("the whole body (%d bytes) was sent before the cut", n)
	} else {
		t.Logf("cut off after %d of %d body bytes", n, size)
	}
	// The server answers and closes the connection.
	c.SetReadDeadline(time.Now().Add(guard))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer after the cut: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Errorf("answer %d (close %v), want 400 and the connection closed", resp.StatusCode, resp.Close)
	}
}

// A client that asks for a large file and then reads nothing is cut off
// once it has taken nothing for Limits.Stall: the handler returns having
// written only what the socket buffers took.
func TestStalledReaderIsCutOff(t *testing.T) {
	const size = 256 << 20 // more than loopback's socket buffers hold
	done := make(chan int64, 1)
	addr := serve(t, Limits{Stall: 500 * time.Millisecond}, fileHandler(bigFile(t, size), done))
	c := dial(t, addr)
	fmt.Fprintf(c, "GET /layer.squashfs HTTP/1.1\r\nHost: head\r\n\r\n")
	select {
	case n := <-done:
		if n >= size {
			t.Fatalf("the handler wrote all %d bytes to a client that read none", n)
		}
		t.Logf("cut off after %d of %d bytes (what the socket buffers took)", n, size)
	case <-time.After(guard):
		t.Fatal("a stalled reader held the handler")
	}
	// The connection is gone: reading on gets less than the file.
	c.SetReadDeadline(time.Now().Add(guard))
	got, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the server left the connection open")
	}
	if got >= size {
		t.Errorf("the client still got %d bytes, the whole file", got)
	}
}

// A download that moves slowly, but keeps taking a Chunk well within each
// Stall, runs to its end however many Stalls it lasts: there is no fixed
// budget for the whole response.
func TestSlowMovingDownloadCompletes(t *testing.T) {
	const (
		size  = 16 << 20
		piece = 32 << 10
		pause = 10 * time.Millisecond
		stall = 2 * time.Second
	)
	// By construction the client takes at least size/piece pauses,
	// 512 x 10 ms = 5 s, two and a half Stalls; a Chunk (8 pieces) takes
	// about 80 ms of them, a 25-fold margin for a loaded machine.
	done := make(chan int64, 1)
	addr := serve(t, Limits{Stall: stall}, fileHandler(bigFile(t, size), done))
	resp, err := http.Get("http://" + addr + "/layer.squashfs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got int64
	buf := make([]byte, piece)
	for {
		n, err := io.ReadFull(resp.Body, buf)
		got += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
		time.Sleep(pause)
	}
	if got != size {
		t.Errorf("got %d bytes, want %d", got, size)
	}
	select {
	case n := <-done:
		if n != size {
			t.Errorf("the handler wrote %d bytes, want %d", n, size)
		}
	case <-time.After(guard):
		t.Fatal("the handler did not return")
	}
}

// A keep-alive connection left idle is closed after Limits.Idle.
func TestIdleConnectionIsClosed(t *testing.T) {
	addr := serve(t, Limits{Idle: 300 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	c := dial(t, addr)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: head\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(guard))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.Close {
		t.Fatal("the server closed the connection at once; the test needs keep-alive")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("reading the idle connection: %v, want EOF (closed by the server)", err)
	}
}

// fakeRF is a ResponseWriter whose ReadFrom records what it was handed.
type fakeRF struct {
	http.ResponseWriter
	srcs []io.Reader
	n    int64
}

func (f *fakeRF) ReadFrom(src io.Reader) (int64, error) {
	f.srcs = append(f.srcs, src)
	n, err := io.Copy(io.Discard, src)
	f.n += n
	return n, err
}

// ReadFrom hands the server a file behind one io.LimitedReader of at most
// Chunk bytes at a time, the form in which net/http can still sendfile(2)
// it, and leaves the caller's LimitedReader with what is left.
func TestReadFromKeepsSendfile(t *testing.T) {
	const size = 3*Chunk + 100
	f, err := os.Open(bigFile(t, size))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fake := &fakeRF{}
	pw := &progressWriter{ResponseWriter: fake, rc: http.NewResponseController(fake), stall: time.Minute}
	lr := &io.LimitedReader{R: f, N: size - 50}
	n, err := pw.ReadFrom(lr)
	if err != nil || n != size-50 || lr.N != 0 {
		t.Fatalf("ReadFrom: %d, %v, %d left; want %d, nil, 0 left", n, err, lr.N, size-50)
	}
	if len(fake.srcs) != 4 {
		t.Errorf("%d pieces, want 4", len(fake.srcs))
	}
	for i, src := range fake.srcs {
		l, ok := src.(*io.LimitedReader)
		if !ok {
			t.Fatalf("piece %d is a %T, want *io.LimitedReader", i, src)
		}
		if _, ok := l.R.(*os.File); !ok {
			t.Errorf("piece %d reads a %T, want the *os.File itself", i, l.R)
		}
	}
}
