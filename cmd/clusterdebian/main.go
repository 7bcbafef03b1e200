// Command clusterdebian builds ClusterDebian images and runs the cluster: the
// same binary serves on the build host, on the head (node1) and on every node.
package main

import (
	"os"

	"github.com/clusterdebian/clusterdebian/internal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
