package verify

// Pair is two nodes measured together, by their index in the node list;
// A < B.
type Pair struct{ A, B int }

// Rounds is the round-robin ("circle") schedule of all pairs of n nodes:
// every pair exactly once, each round a set of disjoint pairs, so that a
// round's measurements run at the same time without sharing a node. n
// nodes take n-1 rounds of n/2 pairs when n is even, and n rounds of
// (n-1)/2 pairs when n is odd (each node sits one round out). n < 2 has no
// rounds.
func Rounds(n int) [][]Pair {
	if n < 2 {
		return nil
	}
	// An odd count gets a phantom node m-1: whoever meets it has a bye.
	m := n
	if m%2 == 1 {
		m++
	}
	// Node 0 stays put; the others rotate one place per round.
	ring := make([]int, m-1)
	for i := range ring {
		ring[i] = i + 1
	}
	rounds := make([][]Pair, 0, m-1)
	for r := 0; r < m-1; r++ {
		var round []Pair
		add := func(a, b int) {
			if a >= n || b >= n {
				return // the bye
			}
			if a > b {
				a, b = b, a
			}
			round = append(round, Pair{a, b})
		}
		add(0, ring[0])
		for i := 1; i < m/2; i++ {
			add(ring[i], ring[m-1-i])
		}
		rounds = append(rounds, round)
		// Rotate: the last moves to the front.
		last := ring[len(ring)-1]
		copy(ring[1:], ring[:len(ring)-1])
		ring[0] = last
	}
	return rounds
}
