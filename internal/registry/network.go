package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// PathNetwork is where the head tells which cluster network it serves:
// GET /api/v1/network answers a Network. The head serves it beside the
// node API (head.routes); it needs no token and shows nothing secret.
const PathNetwork = "/api/v1/network"

// Network is the head's account of the cluster network it serves this
// boot: which interface and subnet, node1's address there and where it
// came from, the DHCP mode and why, and the way out. The head writes the
// same JSON to contract.RunDir/contract.NetworkFile on node1 for the login
// banner.
type Network struct {
	// Summary says it all in one line, for the banner and `clusterdebian
	// status`: "proxyDHCP on 192.168.50.0/23 beside the DHCP server
	// 192.168.50.1 (it gave node1 its address)".
	Summary string `json:"summary"`
	// Warning, when set, says what does not work and what to do.
	Warning string `json:"warning,omitempty"`
	// Interface is the cluster interface and InterfaceWhy why the head
	// took it.
	Interface    string `json:"interface"`
	InterfaceWhy string `json:"interface_why,omitempty"`
	// Address is node1's address on the cluster network, Subnet the
	// network (CIDR).
	Address string `json:"address"`
	Subnet  string `json:"subnet"`
	// AddressSource is where the address came from: "configured"
	// (network.address), "interface" (it was on the interface already),
	// "lease" (the LAN's DHCP server), "default" (.1 of network.subnet,
	// added by the head).
	AddressSource string `json:"address_source"`
	// Mode is what the head's DHCP server does now: "server", "proxy" or
	// "off"; ConfiguredMode is network.dhcp ("auto", ...).
	Mode           string `json:"mode"`
	ConfiguredMode string `json:"configured_mode"`
	// Lease is node1's own lease on a LAN, when AddressSource is "lease".
	Lease *NetworkLease `json:"lease,omitempty"`
	// OtherServers are the other DHCP servers seen on the cluster network
	// this run, and how each showed itself.
	OtherServers []OtherDHCPServer `json:"other_dhcp_servers,omitempty"`
	// NAT is the way out through node1, when the nodes are forwarded.
	NAT *NetworkNAT `json:"nat,omitempty"`
	// NATWhy says why the nodes are or are not forwarded.
	NATWhy string `json:"nat_why,omitempty"`
	// Added are the addresses the head put on interfaces this boot (for
	// the head's next start; not for people).
	Added []string `json:"added,omitempty"`
	// Updated is when the head wrote this.
	Updated time.Time `json:"updated"`
}

// NetworkLease is node1's lease from a LAN's DHCP server.
type NetworkLease struct {
	Server  string    `json:"server"`
	Router  string    `json:"router,omitempty"`
	Start   time.Time `json:"start"`
	Expires time.Time `json:"expires,omitempty"` // zero: infinite
	RenewAt time.Time `json:"renew_at,omitempty"`
}

// OtherDHCPServer is another DHCP server seen on the cluster network
// (dhcp.Evidence).
type OtherDHCPServer struct {
	Server string `json:"server"`
	Seen   string `json:"seen"` // how: "probe-offer", "offer", "ack", "nak", "request"
	// Description says how in words: "it answered node1's probe".
	Description string    `json:"description,omitempty"`
	Client      string    `json:"client,omitempty"`
	Address     string    `json:"address,omitempty"`
	Time        time.Time `json:"time"`
}

// NetworkNAT is node1 forwarding the nodes out of its uplink.
type NetworkNAT struct {
	Out string   `json:"out"`
	DNS []string `json:"dns,omitempty"`
}

// Network returns the head's account of its cluster network. A head from
// before this API answers 404, which matches ErrUnknownNode through
// StatusError: callers that can do without should check for it.
func (c *Client) Network(ctx context.Context) (Network, error) {
	var n Network
	_, data, err := c.do(ctx, "GET", PathNetwork, nil)
	if err != nil {
		return n, err
	}
	if err := json.Unmarshal(data, &n); err != nil {
		return n, fmt.Errorf("head's answer to %s: %w", PathNetwork, err)
	}
	if n.Summary == "" {
		return n, fmt.Errorf("head's answer to %s has no summary", PathNetwork)
	}
	return n, nil
}
