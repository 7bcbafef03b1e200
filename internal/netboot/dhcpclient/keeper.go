package dhcpclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Exchanger does one DHCP exchange at a time on one interface, from its
// MAC. Each method returns the server's answer (a message of the type
// named) or an error; ErrNoAnswer when no server answered in its time.
type Exchanger interface {
	// Discover broadcasts a DISCOVER, asking for prefer when it is valid
	// (a machine that had that address before asks for it back), and
	// returns the first OFFER that holds an address.
	Discover(ctx context.Context, prefer netip.Addr) (*dhcpv4.DHCPv4, error)
	// Request broadcasts a REQUEST for offer's address to offer's server
	// and returns its ACK or NAK.
	Request(ctx context.Context, offer *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error)
	// Extend asks to extend l from l's address: to l's server (RENEWING)
	// or, with rebind, to any server by broadcast (REBINDING). It returns
	// the ACK or NAK.
	Extend(ctx context.Context, l Lease, rebind bool) (*dhcpv4.DHCPv4, error)
}

// ErrNoAnswer: no DHCP server answered.
var ErrNoAnswer = errors.New("no DHCP server answered")

// ErrLost is wrapped by Keeper.Keep's error when the lease is gone: the
// server refused to extend it (NAK), or it ran out unanswered.
var ErrLost = errors.New("lease lost")

// Clock is the time: the real one, or a fake in tests.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RetryFloor is the least time between two tries to extend a lease (RFC
// 2131 section 4.4.5: half the time left, down to 60 seconds).
const RetryFloor = time.Minute

// Keeper takes a lease (Acquire) and keeps it (Keep).
type Keeper struct {
	Exchanger Exchanger
	// Clock is the time; nil is the real one.
	Clock Clock
	// Log gets what the keeper does; nil is slog.Default().
	Log *slog.Logger
}

func (k *Keeper) clock() Clock {
	if k.Clock == nil {
		return realClock{}
	}
	return k.Clock
}

func (k *Keeper) log() *slog.Logger {
	if k.Log == nil {
		return slog.Default()
	}
	return k.Log
}

// Acquire takes a lease: DISCOVER (asking for prefer, when valid), OFFER,
// REQUEST, ACK. It fails with ErrNoAnswer when no server offered, and
// with an error wrapping ErrLost when the server refused (NAK).
func (k *Keeper) Acquire(ctx context.Context, prefer netip.Addr) (Lease, error) {
	return k.acquire(ctx, prefer, false)
}

// OtherAddressError is AcquireAddr's error when the server offered an
// address other than the one asked for.
type OtherAddressError struct {
	Want, Offered, Server netip.Addr
}

func (e *OtherAddressError) Error() string {
	return fmt.Sprintf("%v offered %v, not %v", e.Server, e.Offered, e.Want)
}

// AcquireAddr takes a lease on addr alone, for a machine that runs on addr
// already and cannot move: like Acquire, but an offer of another address
// is not requested (the server takes its offer back when no REQUEST
// follows, RFC 2131 section 4.4.1) and AcquireAddr returns an
// *OtherAddressError.
func (k *Keeper) AcquireAddr(ctx context.Context, addr netip.Addr) (Lease, error) {
	return k.acquire(ctx, addr, true)
}

func (k *Keeper) acquire(ctx context.Context, prefer netip.Addr, only bool) (Lease, error) {
	offer, err := k.Exchanger.Discover(ctx, prefer)
	if err != nil {
		return Lease{}, err
	}
	if offered := toAddr(offer.YourIPAddr); only && offered != prefer {
		return Lease{}, &OtherAddressError{Want: prefer, Offered: offered, Server: toAddr(offer.ServerIdentifier())}
	}
	start := k.clock().Now()
	reply, err := k.Exchanger.Request(ctx, offer)
	if err != nil {
		return Lease{}, err
	}
	if reply.MessageType() == dhcpv4.MessageTypeNak {
		return Lease{}, fmt.Errorf("%w: %v refused the address it offered (%v): %s", ErrLost, toAddr(offer.ServerIdentifier()), toAddr(offer.YourIPAddr), reply.Message())
	}
	return FromACK(reply, start)
}

// Keep keeps l until ctx ends or the lease is lost. From T1 it asks l's
// server to extend it; from T2 any server; a try that gets no answer is
// repeated after half the time left until T2 (or the end of the lease),
// but not sooner than RetryFloor. Every extension is passed to renewed
// (which must not block long) and kept from then on. Keep returns the
// last lease and ctx's error, or an error wrapping ErrLost (a NAK, or the
// lease ran out, or the server moved the address elsewhere).
func (k *Keeper) Keep(ctx context.Context, l Lease, renewed func(Lease)) (Lease, error) {
	clk := k.clock()
	if l.Duration == Infinite {
		<-ctx.Done()
		return l, ctx.Err()
	}
	for {
		// Checked first: select picks at random among ready cases.
		if ctx.Err() != nil {
			return l, ctx.Err()
		}
		now := clk.Now()
		at, rebind, expired := schedule(l, now, false)
		if expired {
			return l, fmt.Errorf("%w: %v ran out at %s without an answer from any DHCP server", ErrLost, l.Addr, l.Expiry().Format(time.TimeOnly))
		}
		if at.After(now) {
			select {
			case <-ctx.Done():
				return l, ctx.Err()
			case <-clk.After(at.Sub(now)):
			}
			continue
		}
		start := clk.Now()
		reply, err := k.Exchanger.Extend(ctx, l, rebind)
		if ctx.Err() != nil {
			return l, ctx.Err()
		}
		state := "renewing"
		if rebind {
			state = "rebinding"
		}
		if err == nil && reply.MessageType() == dhcpv4.MessageTypeNak {
			return l, fmt.Errorf("%w: %v refused to extend %v (%s): %s", ErrLost, toAddr(reply.ServerIdentifier()), l.Addr, state, reply.Message())
		}
		if err == nil {
			var nl Lease
			if nl, err = FromACK(reply, start); err == nil {
				if nl.Addr.Addr() != l.Addr.Addr() {
					return l, fmt.Errorf("%w: asked to extend %v, %v answered with %v", ErrLost, l.Addr, nl.Server, nl.Addr)
				}
				k.log().Info("DHCP lease extended", "lease", nl.String(), "state", state)
				l = nl
				if renewed != nil {
					renewed(l)
				}
				continue
			}
		}
		// No answer (or a broken one): wait and try again.
		next, _, _ := schedule(l, clk.Now(), true)
		k.log().Warn("DHCP lease not extended; trying again", "lease", l.String(), "state", state, "err", err,
			"next_try", next.Format(time.TimeOnly), "expires", l.Expiry().Format(time.TimeOnly))
		now = clk.Now()
		if next.After(now) {
			select {
			case <-ctx.Done():
				return l, ctx.Err()
			case <-clk.After(next.Sub(now)):
			}
		}
	}
}

// schedule says what to do about l at now: at when to try to extend it
// next, with rebind when that try is a broadcast to any server (past T2),
// or expired when it ran out. After a try that got no answer (retry), the
// next try waits half the time left until T2 (before T2) or the end (after
// it), at least RetryFloor, but never past T2 or the end.
func schedule(l Lease, now time.Time, retry bool) (at time.Time, rebind, expired bool) {
	t1, t2, end := l.RenewAt(), l.RebindAt(), l.Expiry()
	switch {
	case !now.Before(end):
		return end, true, true
	case now.Before(t1):
		return t1, false, false
	}
	rebind = !now.Before(t2)
	if !retry {
		return now, rebind, false
	}
	limit := t2
	if rebind {
		limit = end
	}
	wait := max(limit.Sub(now)/2, RetryFloor)
	at = now.Add(wait)
	if at.After(limit) {
		at = limit
	}
	return at, rebind, false
}
