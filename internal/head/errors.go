package head

import (
	"fmt"

	"github.com/clusterdebian/clusterdebian/internal/inputerr"
)

// The head's inputs, as its errors name them (inputerr.Error.Input): the
// fields of Options. New returns an *inputerr.Error about one of them for a
// bad subnet, a boot folder without a kernel, an interface that does not
// exist, and the like; a caller that took the value from elsewhere (the
// CLI: a flag, a cluster.toml key) names where to change it.
const (
	InputInterface     = "Interface"
	InputBootInterface = "BootInterface"
	InputSubnet        = "Subnet"
	InputAddress       = "Address"
	InputNAT           = "NAT"
	InputDHCP          = "DHCP"
	InputRouter        = "Router"
	InputDNS           = "DNS"
	InputBootDir       = "BootDir"
	InputStateDir      = "StateDir"
	InputIPXEDir       = "IPXEDir"
	InputRoot          = "Root"
	InputExtraCmdline  = "ExtraCmdline"
	InputClusterRoot   = "ClusterRoot"
	InputHTTPPort      = "HTTPPort"
)

// optionError returns an *inputerr.Error about the Options field.
func optionError(field string, err error) error {
	return inputerr.New(field, "", err)
}

// optionErrorf is optionError with a formatted message.
func optionErrorf(field, format string, args ...any) error {
	return optionError(field, fmt.Errorf(format, args...))
}
