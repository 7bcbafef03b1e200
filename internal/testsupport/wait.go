package testsupport

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Poll calls cond every interval until it returns true, ctx ends or limit
// has passed, and says which. The limit only guards against a hang: tests
// assert nothing on time.
func Poll(ctx context.Context, interval, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
	return nil
}

// WaitFor is Poll that fails t, naming what it waited for and, when state
// is not nil, what state last showed.
func WaitFor(t testing.TB, ctx context.Context, what string, interval, limit time.Duration, cond func() bool, state func() string) {
	t.Helper()
	if err := Poll(ctx, interval, limit, cond); err != nil {
		if state != nil {
			t.Fatalf("waiting for %s: %v; last: %s", what, err, state())
		}
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
