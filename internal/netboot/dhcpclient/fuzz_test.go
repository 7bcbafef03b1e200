package dhcpclient

import (
	"errors"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzFromACK reads fuzzed packets, as a LAN's DHCP server (anyone's)
// could send them, into leases. A lease FromACK accepts is one the Keeper
// can keep: an IPv4 address and server, at least minLease long or
// infinite, with 0 < T1 < T2 < the lease time, so that renewals neither
// spin nor stop; anything else is an error wrapping ErrUnusable.
func FuzzFromACK(f *testing.F) {
	f.Add(reply(dhcpv4.MessageTypeAck, "192.168.50.1", "192.168.50.23", time.Hour).ToBytes())
	f.Fuzz(func(t *testing.T, pkt []byte) {
		m, err := dhcpv4.FromBytes(pkt)
		if err != nil {
			return
		}
		l, err := FromACK(m, epoch)
		if err != nil {
			if !errors.Is(err, ErrUnusable) {
				t.Fatalf("FromACK error does not wrap ErrUnusable: %v", err)
			}
			return
		}
		if !l.Addr.IsValid() || !l.Addr.Addr().Is4() || !l.Server.Is4() {
			t.Fatalf("lease %v from %v: no IPv4 address or server", l, m.Summary())
		}
		if l.Duration == Infinite {
			return
		}
		if l.Duration < minLease {
			t.Fatalf("lease %v shorter than %v", l, minLease)
		}
		if !(0 < l.T1 && l.T1 < l.T2 && l.T2 < l.Duration) {
			t.Fatalf("lease %v: T1 %v, T2 %v out of order", l, l.T1, l.T2)
		}
		if at, _, expired := schedule(l, epoch, false); expired || !at.After(epoch) {
			t.Fatalf("lease %v, just taken: next renewal at %v, expired %v", l, at.Sub(epoch), expired)
		}
	})
}
