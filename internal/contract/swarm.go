package contract

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// The swarm boot of RAM-root nodes (internal/swarm): a node that fetched
// and verified the image layers serves them to the nodes that boot after
// it, and node1 redirects layer requests to such peers. These are the
// names node1, the initrd (imagefiles/initramfs/live-layers.sh) and the
// agent share.
const (
	// ParamLayerSums is the manifest of the image layers node1 serves:
	// clusterdebian.sha256=01-base.squashfs:<64 hex>,02-custom.ext4:<64 hex>.
	// The initrd refuses a layer whose SHA-256 differs, from whatever server
	// it came.
	ParamLayerSums = "clusterdebian.sha256"
	// ParamSwarm says that node1 may redirect layer requests to peers, and
	// that this node serves its verified layers in turn (SwarmPort):
	// clusterdebian.swarm=1.
	ParamSwarm = "clusterdebian.swarm"
	// SwarmPort is the TCP port a RAM-root node's agent serves its
	// verified layers on, read-only, at /<layer name>.
	SwarmPort = 7079
	// SwarmDirectQuery, added to a layer's URL on node1
	// (/netboot/01-base.squashfs?direct=1), has node1 serve the layer
	// itself instead of redirecting to a peer: the initrd's last retry.
	SwarmDirectQuery = "direct=1"
	// SwarmReportPath is where the initrd reports, with the cluster
	// token, how a layer fetch ended (POST, form layer=<name>&result=ok,
	// bad or fail): node1 then releases the upload slot of the peer it
	// sent the node to, counts its bytes, and stops offering a peer that
	// served a bad copy or broke off.
	SwarmReportPath = "/api/v1/swarm/report"
	// SwarmPath shows the swarm's state (GET, JSON).
	SwarmPath = "/api/v1/swarm"
	// VerifiedLayersFile, in RunDir, lists the layers the initrd fetched
	// and checked against ParamLayerSums, in sha256sum's format
	// ("<hex>  <name>"): the agent serves those and no others.
	VerifiedLayersFile = "swarm-verified"
	// LiveMediaDir is where live-boot keeps what it fetched (fetch=) and the
	// layers beside it, on a RAM-root node; on node1 the medium it booted.
	LiveMediaDir = "/run/live/medium/live"
)

// Swarm reports of the initrd (SwarmReportPath's result=).
const (
	SwarmOK   = "ok"   // the layer arrived and its checksum matched
	SwarmBad  = "bad"  // the layer arrived with another checksum (or short)
	SwarmFail = "fail" // the transfer broke off or was refused
)

// FormatLayerSums writes sums (layer name → hex SHA-256) as
// ParamLayerSums's value, in name order.
func FormatLayerSums(sums map[string]string) string {
	names := make([]string, 0, len(sums))
	for n := range sums {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n + ":" + sums[n])
	}
	return b.String()
}

// ParseLayerSums reads ParamLayerSums's value; an error names the entry
// that is not <layer name>:<64 lower-case hex digits>.
func ParseLayerSums(v string) (map[string]string, error) {
	sums := map[string]string{}
	for e := range strings.SplitSeq(v, ",") {
		name, sum, ok := strings.Cut(e, ":")
		if !ok || !IsLayer(name) || !IsSHA256(sum) {
			return nil, fmt.Errorf("%q is not <layer name>:<SHA-256 in 64 lower-case hex digits>", e)
		}
		if _, dup := sums[name]; dup {
			return nil, fmt.Errorf("layer %s is named twice", name)
		}
		sums[name] = sum
	}
	return sums, nil
}

// IsSHA256 reports whether s is a SHA-256 in 64 lower-case hex digits, as
// sha256sum prints it.
func IsSHA256(s string) bool {
	if len(s) != 64 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
