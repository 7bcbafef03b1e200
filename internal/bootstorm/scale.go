// Package bootstorm simulates many machines network-booting from one head at
// once (issue 13's boot storm, issue 15's head killed during one): each
// simulated node goes through the real protocol path against a real head
// process, DHCP as PXE firmware and again as iPXE, TFTP of the iPXE binary,
// the iPXE script over HTTP, the files it names, registration with the
// token the script carries, then heartbeats. The benchmark in test/bench
// builds the network (namespaces, a bridge, tc) and prints the figures this
// package computes.
package bootstorm

import (
	"fmt"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// Real sizes of a RAM-root node's boot set, in bytes (issue 13: about 460
// MB per node), and the real link rate of node1 and of each node, in bits
// per second.
const (
	RealKernelBytes = 8 << 20
	RealInitrdBytes = 40 << 20
	RealLayerBytes  = 460_000_000 - RealKernelBytes - RealInitrdBytes
	// RealIPXEBytes is about the size of Debian's undionly.kpxe.
	RealIPXEBytes = 70 << 10
	RealLinkBits  = 1_000_000_000
)

// Scale shrinks the boot files and the link rates by the same factor, so
// that N images fit in memory and the transfer times stay those of the real
// sizes on real links.
type Scale struct {
	// Factor divides every size and rate; 1 is the real thing.
	Factor int
}

// Check says why a scale cannot be used.
func (s Scale) Check() error {
	if s.Factor < 1 {
		return fmt.Errorf("scale factor %d: must be at least 1", s.Factor)
	}
	if s.LinkBits() < 100_000 {
		return fmt.Errorf("scale factor %d: links of %d bit/s are too slow for tc to shape evenly", s.Factor, s.LinkBits())
	}
	return nil
}

// Files are the boot files and their sizes in bytes at this scale, by the
// names the head serves them under (contract names).
func (s Scale) Files() map[string]int64 {
	f := int64(s.Factor)
	return map[string]int64{
		contract.KernelFile:   RealKernelBytes / f,
		contract.InitrdFile:   RealInitrdBytes / f,
		contract.BaseLayer:    RealLayerBytes / f,
		contract.BIOSBootFile: max(RealIPXEBytes/f, 1),
	}
}

// ImageBytes is what one RAM-root node fetches over HTTP at this scale:
// kernel, initrd and layers.
func (s Scale) ImageBytes() int64 {
	f := s.Files()
	return f[contract.KernelFile] + f[contract.InitrdFile] + f[contract.BaseLayer]
}

// LinkBits is the rate of every link at this scale, in bits per second.
func (s Scale) LinkBits() int64 { return RealLinkBits / int64(s.Factor) }

// String says what was scaled, for the benchmark's output.
func (s Scale) String() string {
	return fmt.Sprintf("sizes and link rates divided by %d: image %.1f MB (real %.0f MB), links %.1f Mbit/s (real %.0f Mbit/s); times are real-scale",
		s.Factor, float64(s.ImageBytes())/1e6, float64(s.ImageBytes()*int64(s.Factor))/1e6,
		float64(s.LinkBits())/1e6, float64(RealLinkBits)/1e6)
}

// PhysicalLimit is the least time in which node1 can send n images of
// imageBytes each over a link of linkBits bits per second: n × image bytes
// / node1's link rate. It is zero for a link rate of zero or less.
func PhysicalLimit(n int, imageBytes, linkBits int64) time.Duration {
	if linkBits <= 0 {
		return 0
	}
	return time.Duration(float64(n) * float64(imageBytes) * 8 / float64(linkBits) * float64(time.Second))
}
