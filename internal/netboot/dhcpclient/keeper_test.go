package dhcpclient

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// fakeClock moves only when the keeper waits: After advances it by d at
// once, so a lease of hours is kept in microseconds, and every time the
// keeper acts at is exact.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- now
	return ch
}

var epoch = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

// at is the time offset from epoch.
func at(d time.Duration) time.Time { return epoch.Add(d) }

// reply builds a server's answer.
func reply(t dhcpv4.MessageType, server, ip string, lease time.Duration, extra ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	mods := []dhcpv4.Modifier{
		func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply },
		dhcpv4.WithMessageType(t),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(server))),
	}
	if ip != "" {
		mods = append(mods, dhcpv4.WithYourIP(net.ParseIP(ip)), dhcpv4.WithNetmask(net.CIDRMask(23, 32)),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lease)))
	}
	m, err := dhcpv4.New(append(mods, extra...)...)
	if err != nil {
		panic(err)
	}
	return m
}

// try is one call to Extend, as the fake exchanger saw it.
type try struct {
	at     time.Duration // since epoch
	rebind bool
}

// fakeExchanger answers from a script: offer and request for Acquire,
// extend(try) for Extend (nil: no answer).
type fakeExchanger struct {
	clock   *fakeClock
	offer   *dhcpv4.DHCPv4
	request *dhcpv4.DHCPv4
	extend  func(try) *dhcpv4.DHCPv4
	prefer  netip.Addr
	tries   []try
	// requests counts REQUESTs.
	requests int
}

func (f *fakeExchanger) Discover(_ context.Context, prefer netip.Addr) (*dhcpv4.DHCPv4, error) {
	f.prefer = prefer
	if f.offer == nil {
		return nil, ErrNoAnswer
	}
	return f.offer, nil
}

func (f *fakeExchanger) Request(context.Context, *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	f.requests++
	if f.request == nil {
		return nil, ErrNoAnswer
	}
	return f.request, nil
}

func (f *fakeExchanger) Extend(_ context.Context, l Lease, rebind bool) (*dhcpv4.DHCPv4, error) {
	tr := try{f.clock.Now().Sub(epoch), rebind}
	f.tries = append(f.tries, tr)
	if r := f.extend(tr); r != nil {
		return r, nil
	}
	return nil, ErrNoAnswer
}

func newKeeper(f *fakeExchanger) *Keeper {
	return &Keeper{Exchanger: f, Clock: f.clock, Log: slog.New(slog.DiscardHandler)}
}

func lease(t *testing.T, lt time.Duration) Lease {
	t.Helper()
	l, err := FromACK(reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", lt), epoch)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestFromACK(t *testing.T) {
	ack := reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", 2*time.Minute,
		dhcpv4.WithRouter(net.ParseIP("192.168.50.254")), dhcpv4.WithDNS(net.ParseIP("192.168.50.1"), net.ParseIP("9.9.9.9")),
		dhcpv4.WithOption(dhcpv4.OptDomainName("lab.example")))
	l, err := FromACK(ack, epoch)
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr != netip.MustParsePrefix("192.168.50.23/23") || l.Server != netip.MustParseAddr("192.168.50.1") ||
		l.Router != netip.MustParseAddr("192.168.50.254") || len(l.DNS) != 2 || l.Domain != "lab.example" {
		t.Errorf("lease %+v", l)
	}
	// RFC 2131's defaults: T1 half, T2 seven eighths.
	if l.RenewAt() != at(time.Minute) || l.RebindAt() != at(105*time.Second) || l.Expiry() != at(2*time.Minute) {
		t.Errorf("T1 %v T2 %v end %v", l.RenewAt(), l.RebindAt(), l.Expiry())
	}
	if s := l.String(); s != "192.168.50.23/23 from 192.168.50.1 for 2m0s" {
		t.Errorf("String = %q", s)
	}
	// The server's own T1 and T2; odd ones are mended.
	l, _ = FromACK(reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", time.Hour,
		dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(10*time.Minute)), dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(20*time.Minute))), epoch)
	if l.T1 != 10*time.Minute || l.T2 != 20*time.Minute {
		t.Errorf("server's T1/T2: %v %v", l.T1, l.T2)
	}
	l, _ = FromACK(reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", time.Hour,
		dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(50*time.Minute)), dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(2*time.Hour))), epoch)
	if l.T1 >= l.T2 || l.T2 >= l.Duration {
		t.Errorf("odd T1/T2 not mended: %v %v of %v", l.T1, l.T2, l.Duration)
	}
	// Infinite.
	inf := reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", 0)
	inf.UpdateOption(dhcpv4.Option{Code: dhcpv4.OptionIPAddressLeaseTime, Value: dhcpv4.OptionGeneric{Data: []byte{0xff, 0xff, 0xff, 0xff}}})
	if l, err := FromACK(inf, epoch); err != nil || l.Duration != Infinite || !l.Expiry().IsZero() || l.Remaining(epoch) != Infinite {
		t.Errorf("infinite lease: %+v, %v", l, err)
	}

	noMask := reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", time.Hour)
	noMask.Options.Del(dhcpv4.OptionSubnetMask)
	noServer := reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", time.Hour)
	noServer.Options.Del(dhcpv4.OptionServerIdentifier)
	noTime := reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", time.Hour)
	noTime.Options.Del(dhcpv4.OptionIPAddressLeaseTime)
	for name, tc := range map[string]struct {
		m    *dhcpv4.DHCPv4
		want string
	}{
		"a NAK":          {reply(dhcpv4.MessageTypeNak, "192.168.50.1", "", 0), "not a DHCPACK"},
		"no address":     {reply(dhcpv4.MessageTypeAck, "192.168.50.1", "", 0), "no address"},
		"no mask":        {noMask, "no subnet mask"},
		"no server":      {noServer, "names no server"},
		"no lease time":  {noTime, "no lease time"},
		"a 10 s lease":   {reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", 10*time.Second), "runs only 10s"},
		"a nil response": {nil, "not a DHCPACK"},
	} {
		if _, err := FromACK(tc.m, epoch); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

// TestKeepRenews: every renewal goes to the server at T1 of the lease it
// extends, and each extension is reported.
func TestKeepRenews(t *testing.T) {
	clk := &fakeClock{now: epoch}
	f := &fakeExchanger{clock: clk, extend: func(tr try) *dhcpv4.DHCPv4 {
		return reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", 2*time.Minute)
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []Lease
	l, err := newKeeper(f).Keep(ctx, lease(t, 2*time.Minute), func(l Lease) {
		got = append(got, l)
		if len(got) == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || len(got) != 3 {
		t.Fatalf("Keep = %v after %d renewals", err, len(got))
	}
	if want := []try{{time.Minute, false}, {2 * time.Minute, false}, {3 * time.Minute, false}}; !slices.Equal(f.tries, want) {
		t.Errorf("tries %v, want %v", f.tries, want)
	}
	if l.Start != at(3*time.Minute) || l.Expiry() != at(5*time.Minute) {
		t.Errorf("last lease starts %v, ends %v", l.Start, l.Expiry())
	}
}

// TestKeepSilentServer: unanswered, the keeper renews from T1, retrying
// after half the time left (at least a minute), rebinds from T2 likewise,
// and gives the lease up when it runs out.
func TestKeepSilentServer(t *testing.T) {
	for _, tc := range []struct {
		lease time.Duration
		want  []try
	}{
		{2 * time.Minute, []try{{60 * time.Second, false}, {105 * time.Second, true}}},
		{time.Hour, []try{
			{1800 * time.Second, false}, {2475 * time.Second, false}, {2812500 * time.Millisecond, false},
			{2981250 * time.Millisecond, false}, {3065625 * time.Millisecond, false}, {3125625 * time.Millisecond, false},
			{3150 * time.Second, true}, {3375 * time.Second, true}, {3487500 * time.Millisecond, true}, {3547500 * time.Millisecond, true},
		}},
	} {
		clk := &fakeClock{now: epoch}
		f := &fakeExchanger{clock: clk, extend: func(try) *dhcpv4.DHCPv4 { return nil }}
		_, err := newKeeper(f).Keep(context.Background(), lease(t, tc.lease), nil)
		if !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), "ran out") {
			t.Errorf("lease of %v: Keep = %v, want the lease lost", tc.lease, err)
		}
		if !slices.Equal(f.tries, tc.want) {
			t.Errorf("lease of %v: tries %v, want %v", tc.lease, f.tries, tc.want)
		}
		if clk.Now() != at(tc.lease) {
			t.Errorf("lease of %v: given up at %v", tc.lease, clk.Now().Sub(epoch))
		}
	}
}

// TestKeepRebinds: its server gone, another one extends the lease at T2;
// renewals then go to that one.
func TestKeepRebinds(t *testing.T) {
	clk := &fakeClock{now: epoch}
	f := &fakeExchanger{clock: clk}
	f.extend = func(tr try) *dhcpv4.DHCPv4 {
		if tr.rebind {
			return reply(dhcpv4.MessageTypeAck, "192.168.50.2", "192.168.50.23", 2*time.Minute)
		}
		if tr.at > 2*time.Minute {
			return reply(dhcpv4.MessageTypeAck, "192.168.50.2", "192.168.50.23", 2*time.Minute)
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []Lease
	_, err := newKeeper(f).Keep(ctx, lease(t, 2*time.Minute), func(l Lease) {
		got = append(got, l)
		if len(got) == 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || len(got) != 2 || got[0].Server != netip.MustParseAddr("192.168.50.2") {
		t.Fatalf("Keep = %v, leases %v", err, got)
	}
	if want := []try{{60 * time.Second, false}, {105 * time.Second, true}, {165 * time.Second, false}}; !slices.Equal(f.tries, want) {
		t.Errorf("tries %v, want %v", f.tries, want)
	}
}

// TestKeepLost: a NAK, or an ACK for another address, ends the lease at
// once.
func TestKeepLost(t *testing.T) {
	for name, r := range map[string]*dhcpv4.DHCPv4{
		"NAK":             reply(dhcpv4.MessageTypeNak, "192.168.50.1", "", 0, dhcpv4.WithOption(dhcpv4.OptMessage("address not available"))),
		"another address": reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.99", 2*time.Minute),
	} {
		clk := &fakeClock{now: epoch}
		f := &fakeExchanger{clock: clk, extend: func(try) *dhcpv4.DHCPv4 { return r }}
		_, err := newKeeper(f).Keep(context.Background(), lease(t, 2*time.Minute), func(Lease) { t.Errorf("%s: reported as renewed", name) })
		if !errors.Is(err, ErrLost) || len(f.tries) != 1 {
			t.Errorf("%s: Keep = %v after %d tries, want the lease lost at the first", name, err, len(f.tries))
		}
	}
}

func TestAcquire(t *testing.T) {
	clk := &fakeClock{now: epoch}
	offer := reply(dhcpv4.MessageTypeOffer, "192.168.50.1", "192.168.50.23", 2*time.Minute)
	f := &fakeExchanger{clock: clk, offer: offer, request: reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", 2*time.Minute)}
	k := newKeeper(f)
	l, err := k.Acquire(context.Background(), netip.MustParseAddr("192.168.50.23"))
	if err != nil || l.Addr != netip.MustParsePrefix("192.168.50.23/23") || f.prefer != netip.MustParseAddr("192.168.50.23") {
		t.Errorf("Acquire = %v, %v (asked for %v)", l, err, f.prefer)
	}
	f.request = reply(dhcpv4.MessageTypeNak, "192.168.50.1", "", 0)
	if _, err := k.Acquire(context.Background(), netip.Addr{}); !errors.Is(err, ErrLost) {
		t.Errorf("Acquire refused: %v, want ErrLost", err)
	}
	f.offer = nil
	if _, err := k.Acquire(context.Background(), netip.Addr{}); !errors.Is(err, ErrNoAnswer) {
		t.Errorf("Acquire without a server: %v, want ErrNoAnswer", err)
	}
}

// TestAcquireAddr: a machine that cannot move takes only its own address;
// another one offered is not requested.
func TestAcquireAddr(t *testing.T) {
	clk := &fakeClock{now: epoch}
	own := netip.MustParseAddr("192.168.50.23")
	f := &fakeExchanger{clock: clk, offer: reply(dhcpv4.MessageTypeOffer, "192.168.50.1", "192.168.50.23", 2*time.Minute),
		request: reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", 2*time.Minute)}
	k := newKeeper(f)
	if l, err := k.AcquireAddr(context.Background(), own); err != nil || l.Addr.Addr() != own {
		t.Errorf("AcquireAddr of the offered address = %v, %v", l, err)
	}
	f.offer = reply(dhcpv4.MessageTypeOffer, "192.168.50.1", "192.168.50.99", 2*time.Minute)
	f.requests = 0
	_, err := k.AcquireAddr(context.Background(), own)
	var other *OtherAddressError
	if !errors.As(err, &other) || other.Offered != netip.MustParseAddr("192.168.50.99") || other.Want != own ||
		other.Server != netip.MustParseAddr("192.168.50.1") {
		t.Fatalf("AcquireAddr with another address offered: %v, want an OtherAddressError", err)
	}
	if f.requests != 0 {
		t.Errorf("AcquireAddr requested the other address (%d REQUESTs)", f.requests)
	}
}
