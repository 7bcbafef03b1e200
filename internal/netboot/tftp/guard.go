package tftp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// TFTP opcodes (RFC 1350, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opERROR = 5
)

// peerIdle is how long a client's record is kept after its last packet when
// no handler claims it (a request pin/tftp refused before any handler ran).
const peerIdle = 2 * time.Minute

// guardConn is the one socket pin/tftp serves every transfer on (its
// single-port mode). It sees each datagram in both directions, which lets
// it keep RFC 1350's rule that an ERROR is never answered with an ERROR
// (pin/tftp's sender answers a client's ERROR with one of its own, and every
// UEFI size probe ends with the client's ERROR), and tell handleRead how the
// client ended a transfer. Transfers are told apart by the client's address
// and port, as pin/tftp does.
type guardConn struct {
	net.PacketConn

	mu     sync.Mutex
	peers  map[netip.AddrPort]*peerState
	pruned time.Time
}

// peerState is what the guard saw of one transfer.
type peerState struct {
	// tsize: the request asked for the transfer size (RFC 2349).
	tsize bool
	// dataSent: at least one DATA packet went out.
	dataSent bool
	// aborted: the client sent an ERROR; code and msg are its.
	aborted bool
	code    uint16
	msg     string
	seen    time.Time
}

func newGuardConn(c net.PacketConn) *guardConn {
	return &guardConn{PacketConn: c, peers: map[netip.AddrPort]*peerState{}}
}

// peerKey is the transfer key of a peer address: its IP and port.
func peerKey(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok || ua == nil {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

func (g *guardConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := g.PacketConn.ReadFrom(b)
	if err != nil || n < 2 {
		return n, addr, err
	}
	key, ok := peerKey(addr)
	if !ok {
		return n, addr, nil
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.prune(now)
	st := g.peers[key]
	switch binary.BigEndian.Uint16(b) {
	case opRRQ, opWRQ:
		// A repeated request belongs to the transfer under way; a request
		// after the client ended one starts afresh.
		if st == nil || st.aborted {
			st = &peerState{tsize: asksSize(b[2:n])}
			g.peers[key] = st
		}
	case opERROR:
		if st != nil {
			st.aborted = true
			st.code, st.msg = parseError(b[:n])
		}
	}
	if st != nil {
		st.seen = now
	}
	return n, addr, nil
}

func (g *guardConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if key, ok := peerKey(addr); ok && len(b) >= 2 {
		g.mu.Lock()
		if st := g.peers[key]; st != nil {
			switch binary.BigEndian.Uint16(b) {
			case opERROR:
				if st.aborted {
					// The client ended the transfer with an ERROR; RFC 1350
					// forbids answering it. Nothing is lost: the client is
					// not listening any more.
					g.mu.Unlock()
					return len(b), nil
				}
			case opDATA:
				st.dataSent = true
			}
		}
		g.mu.Unlock()
	}
	return g.PacketConn.WriteTo(b, addr)
}

// finish returns what was seen of the transfer with addr and forgets it.
func (g *guardConn) finish(addr net.Addr) peerState {
	key, ok := peerKey(addr)
	if !ok {
		return peerState{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.peers[key]
	delete(g.peers, key)
	if st == nil {
		return peerState{}
	}
	return *st
}

// prune drops the records of clients idle for peerIdle, at most every
// peerIdle/4. Caller holds mu.
func (g *guardConn) prune(now time.Time) {
	if now.Sub(g.pruned) < peerIdle/4 {
		return
	}
	g.pruned = now
	for k, st := range g.peers {
		if now.Sub(st.seen) > peerIdle {
			delete(g.peers, k)
		}
	}
}

// asksSize reports whether the options of a request (the bytes after the
// opcode: file name, mode, then name/value pairs, each NUL-terminated)
// include tsize.
func asksSize(b []byte) bool {
	f := bytes.Split(b, []byte{0})
	for i := 2; i+1 < len(f); i += 2 {
		if strings.EqualFold(string(f[i]), "tsize") {
			return true
		}
	}
	return false
}

// parseError returns the code and message of an ERROR packet.
func parseError(b []byte) (uint16, string) {
	if len(b) < 4 {
		return 0, ""
	}
	msg := b[4:]
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	return binary.BigEndian.Uint16(b[2:]), string(msg)
}
