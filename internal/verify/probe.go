package verify

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// The probe protocol, over TCP: the client sends one JSON request per line
// and reads one JSON response per line, except for two ops that turn the
// connection into a byte stream. Every request carries the run's token, so
// that a probe left listening answers nobody else.
//
//	facts    -> {"facts": {...}}
//	time     -> {"time_ns": server's wall clock}       (clock offset)
//	echo     -> {}                                      (round trips)
//	sink     <- bytes until the client half-closes, then -> {"bytes": n}
//	source   -> bytes for "ns" nanoseconds, then the server closes
//	measure  -> {"link": {...}}: the server measures itself to "peer"
//	quit     -> {} and the server stops
type request struct {
	Token string `json:"token"`
	Op    string `json:"op"`
	NS    int64  `json:"ns,omitempty"`
	Peer  string `json:"peer,omitempty"`
}

type response struct {
	Error  string `json:"error,omitempty"`
	Facts  *Facts `json:"facts,omitempty"`
	TimeNS int64  `json:"time_ns,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
	Link   *Link  `json:"link,omitempty"`
}

// ProbeTimeout bounds one request's exchange, bulk transfers included.
const ProbeTimeout = 30 * time.Second

// Probe serves the probe protocol on one node for one run.
type Probe struct {
	// Token must be in every request.
	Token string
	// Facts reports the node (ReadFacts on a real node).
	Facts func() (Facts, error)
	// Pings is how many round trips a link measurement takes the median
	// of (default 20).
	Pings int
	// Dial opens the probe's own connections to its peers (nil: plain TCP).
	Dial Dialer
}

// Serve answers connections on ln until ctx ends, a quit request comes, or
// no request came for idle. It closes ln.
func (p *Probe) Serve(ctx context.Context, ln net.Listener, idle time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	activity := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(idle)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
			case <-t.C:
				cancel()
			case <-activity:
				t.Reset(idle)
				continue
			}
			ln.Close()
			return
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			p.conn(ctx, c, func() {
				select {
				case activity <- struct{}{}:
				default:
				}
			}, cancel)
		}()
	}
}

// conn answers one connection's requests.
func (p *Probe) conn(ctx context.Context, c net.Conn, active, quit func()) {
	r := bufio.NewReader(c)
	enc := json.NewEncoder(c)
	for {
		c.SetDeadline(time.Now().Add(ProbeTimeout))
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		active()
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			enc.Encode(response{Error: "bad request: " + err.Error()})
			return
		}
		if subtle.ConstantTimeCompare([]byte(req.Token), []byte(p.Token)) != 1 {
			enc.Encode(response{Error: "wrong token"})
			return
		}
		var resp response
		switch req.Op {
		case "facts":
			f, err := p.Facts()
			if err != nil {
				resp.Error = err.Error()
			}
			resp.Facts = &f
		case "time":
			resp.TimeNS = time.Now().UnixNano()
		case "echo":
		case "sink":
			c.SetDeadline(time.Now().Add(ProbeTimeout + time.Duration(req.NS)))
			n, _ := io.Copy(io.Discard, r)
			resp.Bytes = n
		case "source":
			c.SetDeadline(time.Now().Add(ProbeTimeout + time.Duration(req.NS)))
			source(c, time.Duration(req.NS))
			return
		case "measure":
			l, err := p.Dial.measureLink(ctx, req.Peer, p.Token, time.Duration(req.NS), p.Pings)
			if err != nil {
				l.Error = err.Error()
			}
			resp.Link = &l
		case "quit":
			enc.Encode(resp)
			quit()
			return
		default:
			resp.Error = fmt.Sprintf("unknown op %q", req.Op)
		}
		c.SetDeadline(time.Now().Add(ProbeTimeout))
		if err := enc.Encode(resp); err != nil {
			return
		}
	}
}

var block = make([]byte, 64<<10)

// source writes to w for d.
func source(w io.Writer, d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if _, err := w.Write(block); err != nil {
			return
		}
	}
}

// ProbeClient is a connection to a node's probe.
type ProbeClient struct {
	addr, token string
	c           net.Conn
	r           *bufio.Reader
}

// Dialer opens a TCP connection to addr (host:port). Tests dial from
// inside a network namespace with it; nil is net.Dialer's.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

func (d Dialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	if d != nil {
		return d(ctx, addr)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", addr)
}

// DialProbe connects to the probe at addr (host:port).
func DialProbe(ctx context.Context, addr, token string) (*ProbeClient, error) {
	return Dialer(nil).probe(ctx, addr, token)
}

func (d Dialer) probe(ctx context.Context, addr, token string) (*ProbeClient, error) {
	c, err := d.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &ProbeClient{addr: addr, token: token, c: c, r: bufio.NewReader(c)}, nil
}

// Close closes the connection.
func (pc *ProbeClient) Close() error { return pc.c.Close() }

// do sends req and reads the response; timeout bounds the exchange.
func (pc *ProbeClient) do(req request, timeout time.Duration) (response, error) {
	req.Token = pc.token
	pc.c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(pc.c).Encode(req); err != nil {
		return response{}, err
	}
	return pc.read()
}

func (pc *ProbeClient) read() (response, error) {
	line, err := pc.r.ReadBytes('\n')
	if err != nil {
		return response{}, fmt.Errorf("probe at %s: %w", pc.addr, err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return response{}, fmt.Errorf("probe at %s: %w", pc.addr, err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("probe at %s: %s", pc.addr, resp.Error)
	}
	return resp, nil
}

// Facts asks for the node's facts.
func (pc *ProbeClient) Facts() (Facts, error) {
	resp, err := pc.do(request{Op: "facts"}, ProbeTimeout)
	if err != nil || resp.Facts == nil {
		return Facts{}, errors.Join(err, errors.New("no facts in the answer"))
	}
	return *resp.Facts, nil
}

// ClockOffset is the node's clock minus this machine's, NTP-style: of n
// exchanges, the one with the shortest round trip, whose midpoint is the
// best guess of when the node read its clock.
func (pc *ProbeClient) ClockOffset(n int) (time.Duration, error) {
	bestRTT, offset := time.Duration(-1), time.Duration(0)
	for range max(n, 1) {
		t0 := time.Now()
		resp, err := pc.do(request{Op: "time"}, ProbeTimeout)
		if err != nil {
			return 0, err
		}
		rtt := time.Since(t0) // monotonic
		if bestRTT < 0 || rtt < bestRTT {
			bestRTT = rtt
			mid := t0.Add(rtt / 2).UnixNano()
			offset = time.Duration(resp.TimeNS - mid)
		}
	}
	return offset, nil
}

// Measure asks the node to measure its link to peer (the peer's probe
// address), each direction for d.
func (pc *ProbeClient) Measure(peer string, d time.Duration) (Link, error) {
	resp, err := pc.do(request{Op: "measure", Peer: peer, NS: int64(d)}, 2*ProbeTimeout+2*d)
	if err != nil {
		return Link{}, err
	}
	if resp.Link == nil {
		return Link{}, fmt.Errorf("probe at %s: no link in the answer", pc.addr)
	}
	return *resp.Link, nil
}

// Quit stops the probe.
func (pc *ProbeClient) Quit() error {
	_, err := pc.do(request{Op: "quit"}, ProbeTimeout)
	return err
}

// measureLink measures this machine's link to the probe at addr: the
// median of pings round trips, then the TCP throughput each way for d.
// MbitAB is from here to addr.
func (dl Dialer) measureLink(ctx context.Context, addr, token string, d time.Duration, pings int) (Link, error) {
	var l Link
	pc, err := dl.probe(ctx, addr, token)
	if err != nil {
		return l, err
	}
	defer pc.Close()
	if pings <= 0 {
		pings = 20
	}
	var rtts []float64
	for range pings {
		t0 := time.Now()
		if _, err := pc.do(request{Op: "echo"}, ProbeTimeout); err != nil {
			return l, err
		}
		rtts = append(rtts, float64(time.Since(t0).Nanoseconds())/1e3)
	}
	l.RTTMicros = median(rtts)
	if l.MbitAB, err = dl.send(ctx, addr, token, d); err != nil {
		return l, err
	}
	l.MbitBA, err = dl.receive(ctx, addr, token, d)
	return l, err
}

// send streams to the probe at addr for d and returns the rate the probe
// received, in Mbit/s, timed up to its count of the bytes: what was still
// in flight is counted in time as in bytes.
func (dl Dialer) send(ctx context.Context, addr, token string, d time.Duration) (float64, error) {
	return dl.stream(ctx, addr, token, "sink", d, func(pc *ProbeClient) (int64, error) {
		source(pc.c, d)
		if err := pc.c.(*net.TCPConn).CloseWrite(); err != nil {
			return 0, err
		}
		resp, err := pc.read()
		return resp.Bytes, err
	})
}

// receive has the probe at addr stream for d and returns the rate, in
// Mbit/s.
func (dl Dialer) receive(ctx context.Context, addr, token string, d time.Duration) (float64, error) {
	return dl.stream(ctx, addr, token, "source", d, func(pc *ProbeClient) (int64, error) {
		n, err := io.Copy(io.Discard, pc.r)
		if err != nil {
			return 0, fmt.Errorf("probe at %s: %w", addr, err)
		}
		return n, nil
	})
}

// stream asks the probe at addr for op ("sink" or "source") for d, lets
// move carry the bytes and count them, and returns the rate in Mbit/s from
// the request to move's end.
func (dl Dialer) stream(ctx context.Context, addr, token, op string, d time.Duration, move func(*ProbeClient) (int64, error)) (float64, error) {
	pc, err := dl.probe(ctx, addr, token)
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	pc.c.SetDeadline(time.Now().Add(ProbeTimeout + d))
	start := time.Now()
	if err := json.NewEncoder(pc.c).Encode(request{Token: token, Op: op, NS: int64(d)}); err != nil {
		return 0, err
	}
	n, err := move(pc)
	if err != nil {
		return 0, err
	}
	return mbit(n, time.Since(start)), nil
}

func mbit(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) * 8 / d.Seconds() / 1e6
}

// Node is a node to verify: its name and its probe's address, or why its
// probe could not be started.
type Node struct {
	Name, Addr string
	Error      string
}

// Options tune Run.
type Options struct {
	// Duration is how long each direction of a pair streams (default 1 s).
	Duration time.Duration
	// ClockSamples is how many exchanges the clock offset takes the best
	// of (default 8).
	ClockSamples int
	// MPI, if not nil, runs the MPI test (after the network is measured,
	// so that the two do not share the wires).
	MPI func(ctx context.Context) *MPIResult
	// Progress, if not nil, gets a line per stage.
	Progress func(format string, args ...any)
	// Dial opens the connections to the probes (nil: plain TCP).
	Dial Dialer
}

// Run measures nodes, whose probes are serving with token, and returns the
// analysed report. This machine (node1) is the reference clock; pairs
// are measured by their first node, a round's pairs at the same time.
func Run(ctx context.Context, nodes []Node, token string, bar Bar, o Options) *Report {
	start := time.Now()
	if o.Duration <= 0 {
		o.Duration = time.Second
	}
	if o.ClockSamples <= 0 {
		o.ClockSamples = 8
	}
	say := func(format string, args ...any) {
		if o.Progress != nil {
			o.Progress(format, args...)
		}
	}
	r := &Report{Time: start.UTC(), Bar: bar, Nodes: make([]NodeResult, len(nodes))}
	say("facts and clocks of %d nodes", len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Nodes[i] = o.Dial.nodeResult(ctx, n, token, o.ClockSamples)
		}()
	}
	wg.Wait()
	rounds := Rounds(len(nodes))
	r.Rounds = len(rounds)
	for i, round := range rounds {
		say("round %d of %d: %d pairs", i+1, len(rounds), len(round))
		links := make([]Link, len(round))
		for j, p := range round {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, b := nodes[p.A], nodes[p.B]
				l, err := o.Dial.measure(ctx, a, b, token, o.Duration)
				l.A, l.B = a.Name, b.Name
				if err != nil {
					l.Error = err.Error()
				}
				links[j] = l
			}()
		}
		wg.Wait()
		r.Links = append(r.Links, links...)
	}
	// A pair below the bar is measured once more, on its own, and the
	// better of its two measurements counts: one short measurement can be
	// unlucky (a busy CPU, a lost segment), while a slow node or path stays
	// slow.
	if slow := slowLinks(r); len(slow) > 0 {
		say("measuring %d pairs below the bar again", len(slow))
		for i, l := range r.Links {
			if _, again := slow[l]; !again {
				continue
			}
			a, b := nodes[index(nodes, l.A)], nodes[index(nodes, l.B)]
			l2, err := o.Dial.measure(ctx, a, b, token, o.Duration)
			if err != nil {
				continue
			}
			l2.A, l2.B = a.Name, b.Name
			better := l2
			if l.Error == "" {
				if l.Mbit() >= l2.Mbit() {
					better = l
				}
				better.RTTMicros = min(l.RTTMicros, l2.RTTMicros)
			}
			r.Links[i] = better
		}
	}
	slices.SortFunc(r.Links, func(x, y Link) int {
		return slices.Compare([]int{index(nodes, x.A), index(nodes, x.B)}, []int{index(nodes, y.A), index(nodes, y.B)})
	})
	if o.MPI != nil {
		say("MPI ping-pong and allreduce")
		r.MPI = o.MPI(ctx)
	}
	r.Seconds = time.Since(start).Seconds()
	Analyze(r)
	return r
}

func index(nodes []Node, name string) int {
	return slices.IndexFunc(nodes, func(n Node) bool { return n.Name == name })
}

func (dl Dialer) nodeResult(ctx context.Context, n Node, token string, samples int) NodeResult {
	res := NodeResult{Facts: Facts{Name: n.Name}}
	res.IP, _, _ = net.SplitHostPort(n.Addr)
	if n.Error != "" {
		res.Error = n.Error
		return res
	}
	pc, err := dl.probe(ctx, n.Addr, token)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer pc.Close()
	f, err := pc.Facts()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	f.Name = n.Name // the head's name is the one the report is about
	res.Facts = f
	off, err := pc.ClockOffset(samples)
	if err != nil {
		res.Error = err.Error()
	}
	res.ClockOffsetMS = float64(off.Nanoseconds()) / 1e6
	return res
}

// measure has a's probe measure its link to b.
func (dl Dialer) measure(ctx context.Context, a, b Node, token string, d time.Duration) (Link, error) {
	for _, n := range []Node{a, b} {
		if n.Error != "" {
			return Link{}, fmt.Errorf("%s not measured", n.Name)
		}
	}
	pc, err := dl.probe(ctx, a.Addr, token)
	if err != nil {
		return Link{}, err
	}
	defer pc.Close()
	l, err := pc.Measure(b.Addr, d)
	if err == nil && l.Error != "" {
		err = errors.New(l.Error)
	}
	return l, err
}
