package testsupport

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// scenarioChildEnv makes TestScenario run failingScenario instead: in a
// child test binary, since its steps fail on purpose.
const scenarioChildEnv = "TESTSUPPORT_SCENARIO_CHILD"

func failingScenario(t *testing.T) {
	s := NewScenario(t)
	s.Step("setup", nil, func(t *testing.T) {})
	s.Step("broken", []string{"setup"}, func(t *testing.T) { t.Fatal("broken on purpose") })
	s.Step("errors", []string{"setup"}, func(t *testing.T) {
		t.Error("first error")
		t.Error("second error, after the first")
	})
	s.Step("after broken", []string{"setup", "broken"}, func(t *testing.T) { t.Error("must not run") })
	s.Step("after skipped", []string{"after broken"}, func(t *testing.T) { t.Error("must not run") })
	s.Step("opts out", []string{"setup"}, func(t *testing.T) { t.Skip("not on this machine") })
	s.Step("after opting out", []string{"opts out"}, func(t *testing.T) { t.Error("must not run") })
	s.Step("independent", []string{"setup"}, func(t *testing.T) { t.Log("independent ran") })
}

// TestScenario runs a scenario whose steps fail on purpose and reads its
// verbose output: failures do not stop the later steps, and a step whose
// precondition did not pass is skipped with a message naming it.
func TestScenario(t *testing.T) {
	if os.Getenv(scenarioChildEnv) != "" {
		failingScenario(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestScenario$", "-test.v")
	cmd.Env = append(os.Environ(), scenarioChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the scenario with failing steps passed:\n%s", out)
	}
	text := string(out)
	for _, want := range []string{
		`--- PASS: TestScenario/setup`,
		`--- FAIL: TestScenario/broken`,
		`--- FAIL: TestScenario/errors`,
		`first error`,
		`second error, after the first`,
		`--- SKIP: TestScenario/after_broken`,
		`skipped: precondition "broken" failed`,
		`--- SKIP: TestScenario/after_skipped`,
		`skipped: precondition "after broken" skipped`,
		`--- SKIP: TestScenario/opts_out`,
		`--- SKIP: TestScenario/after_opting_out`,
		`skipped: precondition "opts out" skipped`,
		`--- PASS: TestScenario/independent`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the scenario's output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "must not run") {
		t.Errorf("a step ran after its precondition failed:\n%s", text)
	}
	if !regexp.MustCompile(`(?m)^--- FAIL: TestScenario `).MatchString(text) {
		t.Errorf("the scenario's test did not fail:\n%s", text)
	}
}
