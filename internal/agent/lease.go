package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcpclient"
)

// leaseRetry is how long KeepLANLease waits before it asks again after a
// failure.
const leaseRetry = time.Minute

// KeepLANLease keeps addr, which iface holds, leased from the LAN's DHCP
// server while ctx runs, as any DHCP client would (RFC 2131 section 4.4.5):
// it takes the lease again (DISCOVER asking for addr, REQUEST), then
// renews it at T1 and rebinds at T2 (dhcpclient.Keeper, node1's own
// client). The node cannot move: its root or /home is mounted over this
// address. A server that offers another address (not requested: the node
// would hold a lease it does not use), or a lease lost, is logged, and the
// lease asked for again after a minute. It needs root (raw
// sockets).
func KeepLANLease(ctx context.Context, log *slog.Logger, iface string, addr netip.Addr, name string) {
	ex, err := dhcpclient.Open(iface, name)
	if err != nil {
		log.Error("DHCP: cannot keep this node's lease; the LAN's server may give its address away when the lease runs out", "iface", iface, "addr", addr, "err", err)
		return
	}
	k := &dhcpclient.Keeper{Exchanger: ex, Log: log}
	for ctx.Err() == nil {
		l, err := k.AcquireAddr(ctx, addr)
		var other *dhcpclient.OtherAddressError
		switch {
		case ctx.Err() != nil:
			return
		case errors.As(err, &other):
			log.Error("DHCP: the LAN's server offers another address than the one this node runs on; not taking it, and asking again in a minute: the server may give this node's address to another machine",
				"iface", iface, "addr", addr, "offered", other.Offered, "server", other.Server)
		case err != nil:
			log.Warn("DHCP: could not take this node's lease again; asking again in a minute", "iface", iface, "addr", addr, "err", err)
		default:
			log.Info("DHCP: keeping this node's lease from the LAN's server", "lease", l.String())
			if _, err := k.Keep(ctx, l, nil); ctx.Err() == nil {
				log.Warn("DHCP: this node's lease was lost; asking again in a minute", "addr", addr, "err", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(leaseRetry):
		}
	}
}
