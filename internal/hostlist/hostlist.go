// Package hostlist reads and writes the hostlist syntax of HPC tools (pdsh,
// Slurm, ClusterShell): "node[2-5,9]" is node2, node3, node4, node5 and
// node9; "node[01-03]" keeps the zero padding (node01, node02, node03);
// commas outside brackets separate items ("node1,node[3-4]"); and the word
// "all" stands for every node the caller knows.
//
// Expand refuses what it cannot read with an error that names the item and
// the problem, instead of guessing: a command that runs on many machines
// must not run on the wrong ones because of a typo.
package hostlist

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxHosts bounds how many names one expression may expand to: a slip like
// node[1-1000000000] must be an error, not an out-of-memory kill.
const MaxHosts = 65536

// All is the item that stands for every node.
const All = "all"

// ErrSyntax wraps every error of Expand.
var ErrSyntax = errors.New("hostlist")

// maxDigits keeps numbers within uint64 with room for arithmetic.
const maxDigits = 18

// Expand returns the names expr stands for, in the order written, each once.
// all is what "all" expands to. An empty expr is an error: a command given
// no nodes most likely lost its argument.
func Expand(expr string, all []string) ([]string, error) {
	items, err := splitTop(expr)
	if err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]bool{}
	add := func(names []string) error {
		for _, n := range names {
			if seen[n] {
				continue
			}
			if len(out) >= MaxHosts {
				return fmt.Errorf("%w %q: more than %d hosts", ErrSyntax, expr, MaxHosts)
			}
			seen[n] = true
			out = append(out, n)
		}
		return nil
	}
	for _, it := range items {
		if it == All {
			if err := add(all); err != nil {
				return nil, err
			}
			continue
		}
		names, err := expandItem(it, MaxHosts)
		if err != nil {
			return nil, err
		}
		if err := add(names); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// splitTop splits expr at the commas outside brackets, checking that
// brackets pair up and that no item is empty.
func splitTop(expr string) ([]string, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, fmt.Errorf("%w: empty host list", ErrSyntax)
	}
	var items []string
	depth, start := 0, 0
	for i := 0; i < len(expr); i++ {
		switch expr[i] {
		case '[':
			if depth > 0 {
				return nil, fmt.Errorf("%w %q: nested '[' at offset %d", ErrSyntax, expr, i)
			}
			depth++
		case ']':
			if depth == 0 {
				return nil, fmt.Errorf("%w %q: ']' without '[' at offset %d", ErrSyntax, expr, i)
			}
			depth--
		case ',':
			if depth == 0 {
				items = append(items, expr[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("%w %q: '[' is not closed", ErrSyntax, expr)
	}
	items = append(items, expr[start:])
	for i, it := range items {
		it = strings.TrimSpace(it)
		if it == "" {
			return nil, fmt.Errorf("%w %q: empty item (item %d; two commas in a row, or one at an end?)", ErrSyntax, expr, i+1)
		}
		if strings.ContainsAny(it, " \t\r\n") {
			return nil, fmt.Errorf("%w %q: space inside the item %q", ErrSyntax, expr, it)
		}
		items[i] = it
	}
	return items, nil
}

// expandItem expands one item, which may hold several bracket groups
// (rack[1-2]-node[1-3]); limit bounds the product.
func expandItem(item string, limit int) ([]string, error) {
	open := strings.IndexByte(item, '[')
	if open < 0 {
		return []string{item}, nil
	}
	end := strings.IndexByte(item[open:], ']')
	if end < 0 { // splitTop checked pairing; kept for direct callers
		return nil, fmt.Errorf("%w %q: '[' is not closed", ErrSyntax, item)
	}
	end += open
	prefix, body, rest := item[:open], item[open+1:end], item[end+1:]
	nums, err := expandRanges(item, body, limit)
	if err != nil {
		return nil, err
	}
	tails, err := expandItem(rest, limit)
	if err != nil {
		return nil, err
	}
	if len(nums)*len(tails) > limit {
		return nil, fmt.Errorf("%w %q: more than %d hosts", ErrSyntax, item, limit)
	}
	out := make([]string, 0, len(nums)*len(tails))
	for _, n := range nums {
		for _, t := range tails {
			out = append(out, prefix+n+t)
		}
	}
	return out, nil
}

// expandRanges expands the inside of one bracket pair, "2-5,9", into the
// numbers as strings, padded as written.
func expandRanges(item, body string, limit int) ([]string, error) {
	if body == "" {
		return nil, fmt.Errorf("%w %q: empty brackets", ErrSyntax, item)
	}
	var out []string
	for _, r := range strings.Split(body, ",") {
		if r == "" {
			return nil, fmt.Errorf("%w %q: empty range in [%s]", ErrSyntax, item, body)
		}
		loS, hiS, isRange := strings.Cut(r, "-")
		if !isRange {
			hiS = loS
		}
		lo, err := number(item, loS)
		if err != nil {
			return nil, err
		}
		hi, err := number(item, hiS)
		if err != nil {
			return nil, err
		}
		if hi < lo {
			return nil, fmt.Errorf("%w %q: range %s is descending (write %s-%s)", ErrSyntax, item, r, hiS, loS)
		}
		if hi-lo >= uint64(limit) || len(out)+int(hi-lo+1) > limit {
			return nil, fmt.Errorf("%w %q: range %s has more than %d hosts", ErrSyntax, item, r, limit)
		}
		// A leading zero asks for padding to the width written:
		// node[08-10] is node08, node09, node10.
		width := 0
		if len(loS) > 1 && loS[0] == '0' {
			width = len(loS)
		}
		for v := lo; v <= hi; v++ {
			out = append(out, fmt.Sprintf("%0*d", width, v))
		}
	}
	return out, nil
}

// number parses one bound of a range: decimal digits only.
func number(item, s string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("%w %q: a range needs a number on both sides of '-'", ErrSyntax, item)
	}
	if len(s) > maxDigits {
		return 0, fmt.Errorf("%w %q: number %s is too long", ErrSyntax, item, s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w %q: %q is not a number (ranges are digits, like [1-4])", ErrSyntax, item, s)
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w %q: %v", ErrSyntax, item, err)
	}
	return v, nil
}

// Compress writes names as a short hostlist: names that differ only in a
// trailing number become one bracket range ("node1,node2,node3,node7" is
// "node[1-3,7]"). Names are sorted by prefix, then numerically; duplicates
// are dropped. A range keeps the width of its zero-padded bounds, as in
// Slurm's hostlists: node08, node09 and node10 are "node[08-10]", since 10
// written with two digits is 10. Zero-padded numbers stay apart from
// unpadded ones of another width ("node5,node[08-09]"), so that
// Expand(Compress(x)) gives back the same names.
func Compress(names []string) string {
	type key struct {
		prefix string
		width  int // 0: unpadded
	}
	type num struct {
		prefix string
		digits string
		v      uint64
	}
	var nums []num
	padded := map[key]bool{} // the widths written with a leading zero
	var plain []string
	for _, n := range names {
		i := len(n)
		for i > 0 && n[i-1] >= '0' && n[i-1] <= '9' {
			i--
		}
		digits := n[i:]
		// Names with brackets or commas, or without a usable trailing
		// number, are written as they are.
		if digits == "" || len(digits) > maxDigits || strings.ContainsAny(n[:i], "[],") {
			plain = append(plain, n)
			continue
		}
		v, _ := strconv.ParseUint(digits, 10, 64)
		nums = append(nums, num{n[:i], digits, v})
		if len(digits) > 1 && digits[0] == '0' {
			padded[key{n[:i], len(digits)}] = true
		}
	}
	groups := map[key][]uint64{}
	for _, n := range nums {
		k := key{prefix: n.prefix}
		switch {
		case len(n.digits) > 1 && n.digits[0] == '0':
			k.width = len(n.digits)
		case padded[key{n.prefix, len(n.digits)}]:
			// Unpadded, but as wide as padded numbers of its prefix:
			// %0*d writes it as it is, so it joins their range.
			k.width = len(n.digits)
		}
		groups[k] = append(groups[k], n.v)
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := strings.Compare(a.prefix, b.prefix); c != 0 {
			return c
		}
		return a.width - b.width
	})
	var items []string
	for _, k := range keys {
		vs := groups[k]
		slices.Sort(vs)
		vs = slices.Compact(vs)
		if len(vs) == 1 {
			items = append(items, k.prefix+fmt.Sprintf("%0*d", k.width, vs[0]))
			continue
		}
		var rs []string
		for i := 0; i < len(vs); {
			j := i
			for j+1 < len(vs) && vs[j+1] == vs[j]+1 {
				j++
			}
			if i == j {
				rs = append(rs, fmt.Sprintf("%0*d", k.width, vs[i]))
			} else {
				rs = append(rs, fmt.Sprintf("%0*d-%0*d", k.width, vs[i], k.width, vs[j]))
			}
			i = j + 1
		}
		items = append(items, k.prefix+"["+strings.Join(rs, ",")+"]")
	}
	slices.Sort(plain)
	plain = slices.Compact(plain)
	return strings.Join(append(items, plain...), ",")
}
