package shutdown

import (
	"strings"
	"testing"
)

// A permanent node1 (localnode1) is left on after the nodes.
func TestDescribeKeepHead(t *testing.T) {
	p := Plan{Nodes: []string{"node2"}, Head: "node1", KeepHead: true}
	got := p.Describe("power off")
	if !strings.Contains(got, "power off 1 node(s) first: node2") || !strings.Contains(got, "then leave node1 on") ||
		!strings.Contains(got, "--include-head") || strings.Contains(got, "then power off node1") {
		t.Errorf("Describe with KeepHead:\n%s", got)
	}
}
