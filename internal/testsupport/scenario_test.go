package testsupport

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// scenarioHelperEnv makes TestScenarioHelper run: a scenario with steps
// that fail on purpose, run by TestScenario in a child test binary.
const scenarioHelperEnv = "TESTSUPPORT_SCENARIO_HELPER"

func TestScenarioHelper(t *testing.T) {
	if os.Getenv(scenarioHelperEnv) == "" {
		t.Skip("run by TestScenario in a child process (its steps fail on purpose)")
	}
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
	cmd := exec.Command(os.Args[0], "-test.run=^TestScenarioHelper$", "-test.v")
	cmd.Env = append(os.Environ(), scenarioHelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the scenario with failing steps passed:\n%s", out)
	}
	text := string(out)
	for _, want := range []string{
		`--- PASS: TestScenarioHelper/setup`,
		`--- FAIL: TestScenarioHelper/broken`,
		`--- FAIL: TestScenarioHelper/errors`,
		`first error`,
		`second error, after the first`,
		`--- SKIP: TestScenarioHelper/after_broken`,
		`skipped: precondition "broken" failed`,
		`--- SKIP: TestScenarioHelper/after_skipped`,
		`skipped: precondition "after broken" skipped`,
		`--- SKIP: TestScenarioHelper/opts_out`,
		`--- SKIP: TestScenarioHelper/after_opting_out`,
		`skipped: precondition "opts out" skipped`,
		`--- PASS: TestScenarioHelper/independent`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the scenario's output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "must not run") {
		t.Errorf("a step ran after its precondition failed:\n%s", text)
	}
	if !regexp.MustCompile(`(?m)^--- FAIL: TestScenarioHelper `).MatchString(text) {
		t.Errorf("the scenario's test did not fail:\n%s", text)
	}
}
