package verify

import "testing"

func TestRounds(t *testing.T) {
	for n := 0; n <= 20; n++ {
		rounds := Rounds(n)
		wantRounds := n - 1
		if n%2 == 1 {
			wantRounds = n
		}
		if n < 2 {
			wantRounds = 0
		}
		if len(rounds) != wantRounds {
			t.Errorf("n=%d: %d rounds, want %d", n, len(rounds), wantRounds)
		}
		seen := map[Pair]int{}
		for r, round := range rounds {
			if len(round) != n/2 {
				t.Errorf("n=%d round %d: %d pairs, want %d", n, r, len(round), n/2)
			}
			busy := map[int]bool{}
			for _, p := range round {
				if p.A >= p.B || p.A < 0 || p.B >= n {
					t.Errorf("n=%d round %d: bad pair %v", n, r, p)
				}
				if busy[p.A] || busy[p.B] {
					t.Errorf("n=%d round %d: a node in two pairs at once: %v", n, r, round)
				}
				busy[p.A], busy[p.B] = true, true
				seen[p]++
			}
		}
		for a := 0; a < n; a++ {
			for b := a + 1; b < n; b++ {
				if seen[Pair{a, b}] != 1 {
					t.Errorf("n=%d: pair %d-%d measured %d times, want once", n, a, b, seen[Pair{a, b}])
				}
			}
		}
		if len(seen) != n*(n-1)/2 {
			t.Errorf("n=%d: %d distinct pairs, want %d", n, len(seen), n*(n-1)/2)
		}
	}
}
