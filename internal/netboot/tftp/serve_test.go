package tftp

import (
	"context"
	"testing"
	"time"
)

// serveUntilEnd serves s until the test ends; then Serve must return, with
// no error, within guard of its context's end.
func serveUntilEnd(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(guard):
			t.Error("Serve did not return after cancel")
		}
	})
}
