// Package httpguard bounds what one slow or stalled client can hold of an
// HTTP server (the head's boot and API server, a node's swarm layer
// server), without cutting off a download that is slow but moving.
//
// net/http's own ReadTimeout and WriteTimeout are fixed budgets for the
// whole request or response: any value that lets a 400 MB layer through a
// loaded link is long enough for a client that sends nothing to hold a
// connection for minutes. So the bounds here are on progress instead:
//
//   - headers must arrive within Limits.Header (http.Server's
//     ReadHeaderTimeout);
//   - a keep-alive connection idle for Limits.Idle is closed
//     (IdleTimeout);
//   - a request body (the API's JSON, a swarm report) must arrive whole
//     within Limits.Body of the handler's start; bodies are small, and
//     their handlers also cap their size (http.MaxBytesReader);
//   - each piece of a response, at most Chunk bytes, must be taken by the
//     client within Limits.Stall: the write deadline moves on with every
//     piece (http.ResponseController), so a transfer of any size runs as
//     long as it moves at Chunk per Stall or faster (256 KiB a minute,
//     about 4.4 KB/s, with the defaults), and a client that stops reading
//     is cut off one Stall later.
//
// A piece of a file goes out by sendfile(2) as before: ReadFrom hands the
// server's own ReadFrom a Chunk-long slice of the file at a time.
package httpguard

import (
	"io"
	"log"
	"net/http"
	"time"
)

// Chunk is the largest piece of a response written under one write
// deadline, in bytes.
const Chunk = 256 << 10

// Defaults of Limits.
const (
	DefaultHeader = 30 * time.Second
	DefaultIdle   = 2 * time.Minute
	DefaultBody   = 30 * time.Second
	// DefaultStall is the time a client may take to accept one Chunk: at a
	// fair share of a 1 Gbit/s link among 100 nodes (about 1.25 MB/s) a
	// Chunk takes 0.2 s, so only a client some 280 times slower than that
	// is cut off.
	DefaultStall = time.Minute
)

// Limits are the bounds on one connection; a zero field means its default.
type Limits struct {
	// Header is the time to read a request's headers.
	Header time.Duration
	// Idle is how long a keep-alive connection may wait for its next
	// request.
	Idle time.Duration
	// Body is the time to read a request's whole body, from the start of
	// its handler.
	Body time.Duration
	// Stall is the time a client may take to accept one Chunk of a
	// response.
	Stall time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.Header <= 0 {
		l.Header = DefaultHeader
	}
	if l.Idle <= 0 {
		l.Idle = DefaultIdle
	}
	if l.Body <= 0 {
		l.Body = DefaultBody
	}
	if l.Stall <= 0 {
		l.Stall = DefaultStall
	}
	return l
}

// Server returns an http.Server serving h under the limits; errLog may be
// nil (net/http's default logger).
func (l Limits) Server(h http.Handler, errLog *log.Logger) *http.Server {
	l = l.withDefaults()
	return &http.Server{
		Handler:           l.Handler(h),
		ReadHeaderTimeout: l.Header,
		IdleTimeout:       l.Idle,
		ErrorLog:          errLog,
	}
}

// Handler wraps h with the body and progress deadlines (Server does; a
// caller that builds its own http.Server uses this).
func (l Limits) Handler(h http.Handler) http.Handler {
	l = l.withDefaults()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		// Only with a body: a read deadline left behind would also end
		// net/http's background read during a long download, which
		// cancels the request's context.
		if r.Body != nil && r.Body != http.NoBody {
			_ = rc.SetReadDeadline(time.Now().Add(l.Body))
		}
		// A deadline from the connection's previous request must not
		// fail this one's first write.
		_ = rc.SetWriteDeadline(time.Now().Add(l.Stall))
		h.ServeHTTP(&progressWriter{ResponseWriter: w, rc: rc, stall: l.Stall}, r)
		// net/http flushes the rest of the response after the handler
		// returns: give that its own Stall.
		_ = rc.SetWriteDeadline(time.Now().Add(l.Stall))
	})
}

// progressWriter moves the write deadline on before every Chunk.
type progressWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (w *progressWriter) extend() {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
}

func (w *progressWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		piece := p[:min(len(p), Chunk)]
		w.extend()
		m, err := w.ResponseWriter.Write(piece)
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// ReadFrom copies src a Chunk at a time through the underlying writer's
// ReadFrom, which net/http turns into sendfile(2) for a file, also behind
// one io.LimitedReader (the form http.ServeContent passes). The
// LimitedReader is unwrapped here, since sendfile sees through one level
// only.
func (w *progressWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{w}, src)
	}
	inner, left := src, int64(-1)
	lr, limited := src.(*io.LimitedReader)
	if limited {
		inner, left = lr.R, lr.N
	}
	var total int64
	for left != 0 {
		want := int64(Chunk)
		if left > 0 {
			want = min(want, left)
		}
		w.extend()
		n, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: want})
		total += n
		if left > 0 {
			left -= n
		}
		if limited {
			lr.N -= n
		}
		if err != nil || n < want {
			return total, err
		}
	}
	return total, nil
}

// Unwrap lets http.ResponseController reach the connection.
func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes a flush on.
func (w *progressWriter) Flush() {
	w.extend()
	_ = w.rc.Flush()
}

// writerOnly hides ReadFrom so io.Copy cannot recurse.
type writerOnly struct{ io.Writer }
