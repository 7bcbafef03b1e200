package verify

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Bar is what a run must reach to pass. Ratios compare a node or pair with
// the cluster's usual value (the median), so that one bar suits a room of
// old PCs and a rack alike; the absolute bounds are off when 0.
type Bar struct {
	// MinBandwidthRatio: a pair slower than this fraction of the usual
	// pair bandwidth is slow. The usual bandwidth is the median over the
	// nodes of each node's best pair, so one bad node (slow with every
	// partner) does not pull it down.
	MinBandwidthRatio float64 `json:"min_bandwidth_ratio" toml:"min_bandwidth_ratio"`
	// MaxLatencyRatio: a pair whose round trip is more than this many
	// times the usual one (taken as at least 100 µs) is slow.
	MaxLatencyRatio float64 `json:"max_latency_ratio" toml:"max_latency_ratio"`
	// MinBandwidthMbit: a pair below this many Mbit/s is slow (0: off).
	MinBandwidthMbit float64 `json:"min_bandwidth_mbit" toml:"min_bandwidth_mbit"`
	// MinLinkMbit: a card whose reported link speed is below this is a
	// finding (0: off). Slower than the others' is one in any case.
	MinLinkMbit int `json:"min_link_mbit" toml:"min_link_mbit"`
	// MinMemoryRatio: a node with less than this fraction of the median
	// node's memory is a finding.
	MinMemoryRatio float64 `json:"min_memory_ratio" toml:"min_memory_ratio"`
	// MaxClockOffsetSec: a node whose clock is further than this from
	// node1's, in seconds, is a finding.
	MaxClockOffsetSec float64 `json:"max_clock_offset_s" toml:"max_clock_offset_s"`
	// MPI: when true, the MPI run must succeed.
	MPI bool `json:"mpi" toml:"mpi"`
}

// DefaultBar is the bar when neither flags nor cluster.toml set one. Half
// the usual bandwidth: TCG virtual machine pairs vary by some tens of per
// cent from run to run, a node on a 100 Mbit/s port among gigabit ones
// (or shaped to 20 Mbit/s) falls far below half. Two seconds of clock:
// a machine without time sync sets its clock from its RTC in whole
// seconds, so two good ones can differ by up to one.
func DefaultBar() Bar {
	return Bar{MinBandwidthRatio: 0.5, MaxLatencyRatio: 5, MinMemoryRatio: 0.6, MaxClockOffsetSec: 2, MPI: true}
}

// BarKeys are the bar's keys, as in cluster.toml's [verify] and --bar.
var BarKeys = []string{"min_bandwidth_ratio", "max_latency_ratio", "min_bandwidth_mbit", "min_link_mbit",
	"min_memory_ratio", "max_clock_offset_s", "mpi"}

// KeyError is a bad value of one bar key; config names the key
// "verify.<Key>".
type KeyError struct{ Key, Msg string }

func (e *KeyError) Error() string { return e.Key + ": " + e.Msg }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Set sets one key of the bar from its text ("min_bandwidth_ratio",
// "0.3"). The error names the key and what it takes.
func (b *Bar) Set(key, value string) error {
	value = strings.TrimSpace(value)
	float := func(dst *float64) error {
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return keyErr(key, "%q is not a number", value)
		}
		*dst = v
		return nil
	}
	var err error
	switch key {
	case "min_bandwidth_ratio":
		err = float(&b.MinBandwidthRatio)
	case "max_latency_ratio":
		err = float(&b.MaxLatencyRatio)
	case "min_bandwidth_mbit":
		err = float(&b.MinBandwidthMbit)
	case "min_memory_ratio":
		err = float(&b.MinMemoryRatio)
	case "max_clock_offset_s":
		err = float(&b.MaxClockOffsetSec)
	case "min_link_mbit":
		v, perr := strconv.Atoi(value)
		if perr != nil {
			return keyErr(key, "%q is not a whole number of Mbit/s", value)
		}
		b.MinLinkMbit = v
	case "mpi":
		v, perr := strconv.ParseBool(value)
		if perr != nil {
			return keyErr(key, "%q is not true or false", value)
		}
		b.MPI = v
	default:
		return fmt.Errorf("unknown key %q (known: %s)", key, strings.Join(BarKeys, ", "))
	}
	if err != nil {
		return err
	}
	return b.Validate()
}

// SetAll applies "key=value" settings in order (as --bar gives them).
func (b *Bar) SetAll(settings []string) error {
	for _, s := range settings {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("%q: want key=value, key one of %s", s, strings.Join(BarKeys, ", "))
		}
		if err := b.Set(strings.TrimSpace(k), v); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks every key's range; the error names the first key out of
// it.
func (b Bar) Validate() error {
	for _, r := range []struct {
		key    string
		v      float64
		lo, hi float64
	}{
		{"min_bandwidth_ratio", b.MinBandwidthRatio, 0, 1},
		{"min_memory_ratio", b.MinMemoryRatio, 0, 1},
		{"max_latency_ratio", b.MaxLatencyRatio, 1, 1e6},
		{"min_bandwidth_mbit", b.MinBandwidthMbit, 0, 1e7},
		{"min_link_mbit", float64(b.MinLinkMbit), 0, 1e7},
		{"max_clock_offset_s", b.MaxClockOffsetSec, 0, 1e6},
	} {
		if !(r.v >= r.lo && r.v <= r.hi) { // also catches NaN
			return keyErr(r.key, "%v is outside %v..%v", r.v, r.lo, r.hi)
		}
	}
	if b.MaxClockOffsetSec == 0 {
		return keyErr("max_clock_offset_s", "0 would fail every node; give a positive number of seconds")
	}
	return nil
}

// median of xs (not changed); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
