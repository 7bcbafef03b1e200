package testsupport

import (
	"fmt"
	"testing"
)

// Scenario runs the checks of one long test as named steps, each a
// subtest, in order, all sharing what the test set up (a booted cluster):
// a step that fails does not hide the steps after it. A step names the
// earlier steps it needs; when one of them did not pass, the step is
// skipped with a message naming it, never silently.
type Scenario struct {
	t      *testing.T
	status map[string]string // step name: "passed", "failed" or "skipped"
}

// NewScenario starts a scenario in the test t.
func NewScenario(t *testing.T) *Scenario {
	return &Scenario{t: t, status: map[string]string{}}
}

// Step runs fn as the subtest name once every step in needs has passed,
// and reports whether it passed. Inside fn, t.Errorf reports a failed
// check and goes on; t.Fatalf ends only this step.
func (s *Scenario) Step(name string, needs []string, fn func(t *testing.T)) bool {
	s.t.Helper()
	if _, dup := s.status[name]; dup {
		s.t.Fatalf("scenario: step %q twice", name)
	}
	s.status[name] = "failed" // until it says otherwise, also if it panics
	var blocker string
	for _, n := range needs {
		st, ok := s.status[n]
		switch {
		case !ok:
			s.t.Fatalf("scenario: step %q needs %q, which has not run before it", name, n)
		case st != "passed" && blocker == "":
			blocker = fmt.Sprintf("precondition %q %s", n, st)
		}
	}
	s.t.Run(name, func(t *testing.T) {
		if blocker != "" {
			s.status[name] = "skipped"
			t.Skip("skipped: " + blocker)
		}
		defer func() {
			switch {
			case t.Failed():
			case t.Skipped():
				s.status[name] = "skipped"
			default:
				s.status[name] = "passed"
			}
		}()
		fn(t)
	})
	return s.status[name] == "passed"
}

// Passed reports whether the step name ran and passed.
func (s *Scenario) Passed(name string) bool { return s.status[name] == "passed" }
