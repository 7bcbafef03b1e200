package tftp

// Namespace tests: the server and a client in two network namespaces joined
// by a veth pair of a chosen MTU, the exact packets of the faults written by
// hand, and the bytes that come back checked. No interface of the machine
// is touched.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
)

const (
	nsServerIP = "10.77.0.1"
	nsClientIP = "10.77.0.2"
)

// tftpNet is a server namespace and a client namespace on one veth link.
type tftpNet struct {
	server, client *netns.NS
	mtu            int
}

func newTFTPNet(t *testing.T, mtu int) *tftpNet {
	t.Helper()
	ctx := context.Background()
	nss := testsupport.Namespaces(t, ctx, "ts", "tc")
	n := &tftpNet{server: nss[0], client: nss[1], mtu: mtu}
	must(t, netns.AddVeth(ctx, n.server, "eth0", n.client, "eth0"))
	for _, side := range []struct {
		ns   *netns.NS
		addr string
	}{{n.server, nsServerIP}, {n.client, nsClientIP}} {
		must(t, side.ns.IP(ctx, "link", "set", "eth0", "mtu", strconv.Itoa(mtu)))
		must(t, side.ns.IP(ctx, "addr", "add", side.addr+"/24", "dev", "eth0"))
	}
	return n
}

// logRecord is one log line of the server.
type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// logCapture is a slog handler that keeps every record and lets a test
// wait for one.
type logCapture struct {
	t       *testing.T
	mu      sync.Mutex
	recs    []logRecord
	changed chan struct{}
}

func newLogCapture(t *testing.T) *logCapture {
	return &logCapture{t: t, changed: make(chan struct{}, 1)}
}

func (c *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCapture) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *logCapture) WithGroup(string) slog.Handler            { return c }
func (c *logCapture) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	var line strings.Builder
	fmt.Fprintf(&line, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		fmt.Fprintf(&line, " %s=%s", a.Key, a.Value)
		return true
	})
	c.mu.Lock()
	c.recs = append(c.recs, rec)
	c.mu.Unlock()
	c.t.Log(line.String())
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return nil
}

func (c *logCapture) since(i int) []logRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]logRecord(nil), c.recs[i:]...)
}

func (c *logCapture) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.recs)
}

// await waits for a record with message msg after mark i.
func (c *logCapture) await(t *testing.T, i int, msg string) logRecord {
	t.Helper()
	timeout := time.After(guard)
	for {
		for _, r := range c.since(i) {
			if r.msg == msg {
				return r
			}
		}
		select {
		case <-c.changed:
		case <-timeout:
			t.Fatalf("no %q log record", msg)
		}
	}
}

// startIn creates the server inside the server namespace (its socket lives
// there) and serves it until the test ends.
func (n *tftpNet) start(t *testing.T, cfg Config) *Server {
	t.Helper()
	var s *Server
	must(t, n.server.Do(func() (err error) {
		s, err = New(cfg)
		return err
	}))
	serveUntilEnd(t, s)
	return s
}

// clientConn opens a UDP socket in the client namespace.
func (n *tftpNet) clientConn(t *testing.T) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	must(t, n.client.Do(func() (err error) {
		c, err = net.ListenPacket("udp4", nsClientIP+":0")
		return err
	}))
	t.Cleanup(func() { c.Close() })
	must(t, c.SetDeadline(time.Now().Add(guard)))
	return c
}

// reassembled returns how many IP packets the client namespace has
// reassembled from fragments so far (Ip: ReasmOKs in /proc/net/snmp).
func (n *tftpNet) reassembled(t *testing.T) int {
	t.Helper()
	out, err := n.client.Output(context.Background(), "cat", "/proc/net/snmp")
	must(t, err)
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "ReasmOKs" && i < len(f) {
				v, err := strconv.Atoi(f[i])
				must(t, err)
				return v
			}
		}
	}
	t.Fatalf("no Ip: ReasmOKs in /proc/net/snmp:\n%s", out)
	return 0
}

// rrq builds a read request with options given as name, value pairs.
func rrq(file string, opts ...string) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, opRRQ})
	for _, s := range append([]string{file, "octet"}, opts...) {
		b.WriteString(s)
		b.WriteByte(0)
	}
	return b.Bytes()
}

func errorPacket(code uint16, msg string) []byte {
	b := []byte{0, opERROR, byte(code >> 8), byte(code)}
	return append(append(b, msg...), 0)
}

func ack(block uint16) []byte { return []byte{0, 4, byte(block >> 8), byte(block)} }

var serverAddr = &net.UDPAddr{IP: net.ParseIP(nsServerIP), Port: 69}

// readPacket reads the next datagram from the server.
func readPacket(t *testing.T, c net.PacketConn) ([]byte, net.Addr) {
	t.Helper()
	buf := make([]byte, 65536)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("reading from the server: %v", err)
	}
	return buf[:n], from
}

// TestNetnsBlockSize sends read requests asking for big blocks (1472, the
// largest an unfragmented packet could carry without the TFTP header, and
// 65464, the largest RFC 2348 allows) on links of several MTUs, and checks
// every datagram that comes back: the OACK grants at most MTU − 32, no
// datagram is bigger than MTU − 28 (so no IP packet bigger than the MTU),
// the client reassembled no fragments, and the file arrives whole.
func TestNetnsBlockSize(t *testing.T) {
	f := newFixture(t)
	want := f.files["undionly.kpxe"]
	for _, mtu := range []int{1500, 1400, 9000, 576} {
		t.Run(fmt.Sprintf("mtu%d", mtu), func(t *testing.T) {
			n := newTFTPNet(t, mtu)
			s := n.start(t, Config{Files: tree(t, []string{f.root}), Addr: nsServerIP + ":69", Interface: "eth0",
				Logger: slog.New(newLogCapture(t))})
			limit := mtu - 32
			if s.BlockSize() != limit {
				t.Errorf("BlockSize %d on MTU %d, want %d", s.BlockSize(), mtu, limit)
			}
			// pin/tftp, like many servers, ignores blksize below TFTP's 512.
			for _, ask := range []int{1472, 65464, limit, max(limit-100, 512), 8192, 512} {
				grant := min(ask, limit)
				before := n.reassembled(t)
				c := n.clientConn(t)
				_, err := c.WriteTo(rrq("undionly.kpxe", "blksize", strconv.Itoa(ask), "tsize", "0"), serverAddr)
				must(t, err)
				p, from := readPacket(t, c)
				if binary.BigEndian.Uint16(p) != 6 {
					t.Fatalf("blksize %d: want OACK, got % x", ask, p)
				}
				opts := parseOpts(p[2:])
				if opts["blksize"] != strconv.Itoa(grant) || opts["tsize"] != strconv.Itoa(len(want)) {
					t.Errorf("MTU %d, asked %d: OACK %v, want blksize %d tsize %d", mtu, ask, opts, grant, len(want))
				}
				var got []byte
				block := uint16(0)
				for {
					_, err = c.WriteTo(ack(block), from)
					must(t, err)
					p, _ = readPacket(t, c)
					if len(p)+28 > mtu {
						t.Errorf("MTU %d, asked %d: a %d-byte datagram (an IP packet of %d bytes)", mtu, ask, len(p), len(p)+28)
					}
					if op := binary.BigEndian.Uint16(p); op != opDATA || binary.BigEndian.Uint16(p[2:]) != block+1 {
						t.Fatalf("want DATA %d, got % x", block+1, p[:min(len(p), 16)])
					}
					block++
					got = append(got, p[4:]...)
					if len(p)-4 < grant {
						break
					}
				}
				_, err = c.WriteTo(ack(block), from)
				must(t, err)
				if !bytes.Equal(got, want) {
					t.Errorf("MTU %d, asked %d: got %d bytes, want %d", mtu, ask, len(got), len(want))
				}
				if after := n.reassembled(t); after != before {
					t.Errorf("MTU %d, asked %d: the client reassembled %d fragmented packets", mtu, ask, after-before)
				}
			}
			// A real client asking for the largest block, as iPXE and
			// curl may.
			if curl, err := exec.LookPath("curl"); err == nil {
				before := n.reassembled(t)
				out, err := n.client.Output(context.Background(), curl, "-sS", "--tftp-blksize", "65464",
					"-o", "-", "tftp://"+nsServerIP+"/undionly.kpxe")
				if err != nil || !bytes.Equal(out, want) {
					t.Errorf("curl: %d bytes, %v", len(out), err)
				}
				if after := n.reassembled(t); after != before {
					t.Errorf("curl on MTU %d: %d fragmented packets", mtu, after-before)
				}
			}
		})
	}
}

// TestNetnsErrorAfterError plays the client side of transfers that the
// client ends with an ERROR, and checks that the server never answers that
// ERROR with one of its own (RFC 1350), and logs and reports each as it
// should: the UEFI size probe (tsize, then ERROR 8 after the OACK) as an
// info "size probe" that is no read at all; the same with other codes;
// an abort after the options without tsize, and one in the middle of the
// data, as warnings reported to OnRead as failures.
//
// Whether an ERROR came back is seen without waiting on a clock: once the
// server has logged the end of the transfer, the client sends a new request
// from the same port, and the first datagram it then reads must be the
// answer to that request. An ERROR sent in reply to the client's would have
// left the server's one socket earlier, on the same path, and come first.
func TestNetnsErrorAfterError(t *testing.T) {
	f := newFixture(t)
	n := newTFTPNet(t, 1500)
	logs := newLogCapture(t)
	rec := newRecorder()
	n.start(t, Config{Files: tree(t, []string{f.root}), Addr: nsServerIP + ":69", Interface: "eth0",
		Logger: slog.New(logs), OnRead: rec.onRead})

	cases := []struct {
		name    string
		opts    []string
		acks    int // DATA blocks acknowledged before the ERROR
		code    uint16
		msg     string
		wantLog string
		probe   bool // a size probe: info, not reported to OnRead
	}{
		{"uefi size probe", []string{"tsize", "0", "blksize", "1468"}, 0, 8, "User aborted the transfer", "size probe", true},
		{"size probe code 0", []string{"tsize", "0"}, 0, 0, "", "size probe", true},
		{"size probe code 4", []string{"blksize", "1024", "tsize", "0"}, 0, 4, "illegal operation", "size probe", true},
		{"options refused", []string{"blksize", "1468"}, 0, 8, "option negotiation failed", "read aborted by the client", false},
		{"abort mid-transfer", []string{"tsize", "0", "blksize", "512"}, 3, 0, "out of memory", "read aborted by the client", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := n.clientConn(t)
			mark := logs.mark()
			reads := len(rec.all())
			_, err := c.WriteTo(rrq("undionly.kpxe", tc.opts...), serverAddr)
			must(t, err)
			p, from := readPacket(t, c)
			if binary.BigEndian.Uint16(p) != 6 {
				t.Fatalf("want OACK, got % x", p)
			}
			block := uint16(0)
			for range tc.acks {
				_, err = c.WriteTo(ack(block), from)
				must(t, err)
				p, _ = readPacket(t, c)
				if binary.BigEndian.Uint16(p) != opDATA {
					t.Fatalf("want DATA, got % x", p[:4])
				}
				block++
			}
			_, err = c.WriteTo(errorPacket(tc.code, tc.msg), from)
			must(t, err)
			r := logs.await(t, mark, tc.wantLog)
			if r.attrs["client_error_code"] != strconv.Itoa(int(tc.code)) || r.attrs["client_error"] != tc.msg {
				t.Errorf("log %q: client error %s %q, want %d %q", tc.wantLog, r.attrs["client_error_code"], r.attrs["client_error"], tc.code, tc.msg)
			}
			if tc.probe && r.attrs["size"] != strconv.Itoa(len(f.files["undionly.kpxe"])) {
				t.Errorf("size probe logged size %q", r.attrs["size"])
			}

			// The barrier: a new request from the same port for a
			// one-block file. Its DATA must be the first thing back.
			_, err = c.WriteTo(rrq("pxelinux.cfg/default"), serverAddr)
			must(t, err)
			p, from = readPacket(t, c)
			if op := binary.BigEndian.Uint16(p); op != opDATA {
				code, msg := parseError(p)
				t.Fatalf("after the client's ERROR the server sent opcode %d (code %d %q), want nothing before the next DATA", op, code, msg)
			}
			_, err = c.WriteTo(ack(1), from)
			must(t, err)
			logs.await(t, mark, "read")

			var warns []string
			for _, r := range logs.since(mark) {
				if r.level >= slog.LevelWarn {
					warns = append(warns, r.msg)
				}
			}
			if tc.probe {
				if len(warns) != 0 {
					t.Errorf("size probe logged warnings %q", warns)
				}
				// Only the barrier's read is reported.
				recs := rec.wait(t, reads+1)[reads:]
				if len(recs) != 1 || recs[0].file != "pxelinux.cfg/default" || recs[0].err != nil {
					t.Errorf("OnRead after a size probe: %+v, want only the next read", recs)
				}
				return
			}
			if len(warns) != 1 || warns[0] != tc.wantLog {
				t.Errorf("warnings %q, want one %q", warns, tc.wantLog)
			}
			got := rec.wait(t, reads+2)[reads:]
			var failed int
			for _, r := range got {
				if r.file == "undionly.kpxe" && r.err != nil {
					failed++
				}
			}
			if failed != 1 {
				t.Errorf("OnRead records %+v, want one failed read of undionly.kpxe", got)
			}
		})
	}
}

// TestNetnsStrayError: an ERROR that belongs to no transfer (a client that
// gave up long ago, or a forged packet) gets no answer either.
func TestNetnsStrayError(t *testing.T) {
	f := newFixture(t)
	n := newTFTPNet(t, 1500)
	n.start(t, Config{Files: tree(t, []string{f.root}), Addr: nsServerIP + ":69", Interface: "eth0", Logger: slog.New(newLogCapture(t))})
	for _, code := range []uint16{0, 5, 8} {
		c := n.clientConn(t)
		_, err := c.WriteTo(errorPacket(code, "stray"), serverAddr)
		must(t, err)
		// The barrier, as in TestNetnsErrorAfterError: the server reads
		// datagrams in order, so anything it sent for the ERROR comes first.
		_, err = c.WriteTo(rrq("pxelinux.cfg/default"), serverAddr)
		must(t, err)
		p, from := readPacket(t, c)
		if op := binary.BigEndian.Uint16(p); op != opDATA {
			t.Errorf("stray ERROR %d answered with opcode %d % x", code, op, p)
			continue
		}
		_, err = c.WriteTo(ack(1), from)
		must(t, err)
	}
}
