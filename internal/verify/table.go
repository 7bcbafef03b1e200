package verify

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable writes r for people: a line per node, the pair matrix
// (throughput in Mbit/s, the slower direction, and round trip), the MPI
// run, the findings and the verdict.
func WriteTable(w io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tIP\tCARD\tLINK\tMTU\tCORES\tMEMORY\tCLOCK")
	for _, n := range r.Nodes {
		if n.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t(%s)\n", n.Name, n.IP, n.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%.1f GiB\t%+.1f ms\n", n.Name, n.IP, n.Interface, LinkText(n.Facts),
			n.MTU, n.Cores, float64(n.MemTotalKiB)/(1<<20), n.ClockOffsetMS)
	}
	fmt.Fprintf(tw, "\nPAIRS\t(Mbit/s, the slower way / round trip; %d rounds)\n", r.Rounds)
	fmt.Fprint(tw, "\t")
	for _, n := range r.Nodes {
		fmt.Fprintf(tw, "%s\t", n.Name)
	}
	fmt.Fprintln(tw)
	for _, a := range r.Nodes {
		fmt.Fprintf(tw, "%s\t", a.Name)
		for _, b := range r.Nodes {
			fmt.Fprintf(tw, "%s\t", cell(r, a.Name, b.Name))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if m := r.MPI; m != nil {
		if m.OK {
			fmt.Fprintf(w, "\nMPI: %d ranks, ping-pong %.0f µs (the slowest rank), allreduce %.0f µs\n", m.Ranks, m.PingPongMicros, m.AllreduceMicros)
		} else {
			fmt.Fprintf(w, "\nMPI: failed: %s\n", m.Error)
		}
	}
	fmt.Fprintln(w)
	for _, f := range r.Findings {
		who := f.Node
		if f.Peer != "" {
			who += "-" + f.Peer
		}
		if who == "" {
			who = "cluster"
		}
		fmt.Fprintf(w, "BELOW THE BAR: %s: %s: %s\n", who, f.What, f.Cause)
	}
	verdict := "PASS"
	if !r.Pass {
		verdict = fmt.Sprintf("FAIL (%d below the bar)", len(r.Findings))
	}
	_, err := fmt.Fprintf(w, "%s: %d nodes, %d pairs in %.1f s\n", verdict, len(r.Nodes), len(r.Links), r.Seconds)
	return err
}

// LinkText is a card's speed and duplex as people write it: "1000/full",
// or "?" when the driver does not say.
func LinkText(f Facts) string {
	s := "?"
	if f.SpeedMbit > 0 {
		s = fmt.Sprint(f.SpeedMbit)
	}
	if f.Duplex != "" {
		s += "/" + f.Duplex
	}
	return s
}

// cell is the matrix entry of a and b: "412/310µs", "-" on the diagonal,
// "error" for a failed pair.
func cell(r *Report, a, b string) string {
	if a == b {
		return "-"
	}
	l, ok := r.Link(a, b)
	switch {
	case !ok:
		return ""
	case l.Error != "":
		return "error"
	}
	return fmt.Sprintf("%.0f/%s", l.Mbit(), micros(l.RTTMicros))
}

// micros writes a duration in µs briefly: "310µs", "2.3ms".
func micros(us float64) string {
	if us < 1000 {
		return fmt.Sprintf("%.0fµs", us)
	}
	return strings.TrimSuffix(fmt.Sprintf("%.1f", us/1000), ".0") + "ms"
}
