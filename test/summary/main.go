// Command summary reads `go test -json` on its standard input and prints
// what a CI log needs: each package's result line, every skipped test with
// the reason it gave, the whole output of every failed test, and the
// counts. Skips are never silent this way, and passing tests do not drown
// the log. It exits non-zero when a test or a package failed, or when the
// input ended without a result for a test that started (a crash, a
// timeout).
//
//	go test -json ./... 2>&1 | go run ./test/summary
//	go test -json -tags e2e ./test/e2e/ 2>&1 | go run ./test/summary -v -durations
//
// -v also echoes all test output as it comes (what go test -v prints);
// -durations ends with each test's and step's time.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

func main() {
	verbose := flag.Bool("v", false, "echo all test output as it comes")
	durations := flag.Bool("durations", false, "end with the time of every test and subtest")
	flag.Parse()
	s := newSummary(os.Stdout, *verbose)
	if err := s.read(os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "summary:", err)
		os.Exit(2)
	}
	if !s.report(*durations) {
		os.Exit(1)
	}
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64 // seconds
	Output  string
}

// test is what was seen of one test or subtest, or of a package itself
// (name "").
type test struct {
	pkg, name string
	output    []string
	result    string // pass, fail, skip; "" while running
	elapsed   time.Duration
}

type summary struct {
	w       io.Writer
	verbose bool
	tests   map[[2]string]*test
	order   []*test // in order of their first event
}

func newSummary(w io.Writer, verbose bool) *summary {
	return &summary{w: w, verbose: verbose, tests: map[[2]string]*test{}}
}

func (s *summary) get(pkg, name string) *test {
	k := [2]string{pkg, name}
	t := s.tests[k]
	if t == nil {
		t = &test{pkg: pkg, name: name}
		s.tests[k] = t
		s.order = append(s.order, t)
	}
	return t
}

// read consumes the events. Lines that are no JSON event (go test's own
// messages, build errors on stderr) are printed as they are.
func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(s.w, "%s\n", line)
			continue
		}
		s.add(e)
	}
	return sc.Err()
}

func (s *summary) add(e event) {
	switch e.Action {
	case "output", "build-output":
		t := s.get(e.Package, e.Test)
		t.output = append(t.output, e.Output)
		if s.verbose {
			fmt.Fprint(s.w, e.Output)
		}
	case "run":
		s.get(e.Package, e.Test)
	case "pass", "fail", "skip":
		t := s.get(e.Package, e.Test)
		t.result = e.Action
		t.elapsed = time.Duration(e.Elapsed * float64(time.Second))
		if e.Test == "" && !s.verbose {
			// The package's result line, as go test prints it.
			for _, l := range t.output {
				if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "FAIL") || strings.HasPrefix(l, "? ") {
					fmt.Fprint(s.w, l)
				}
			}
		}
	case "build-fail":
		t := s.get(e.Package, "")
		t.result = "fail"
	}
}

// reason is a skipped test's own output without go test's framing lines:
// what it passed to t.Skip.
func reason(t *test) string {
	var lines []string
	for _, l := range t.output {
		trimmed := strings.TrimSpace(l)
		if trimmed == "" || strings.HasPrefix(trimmed, "=== ") || strings.HasPrefix(trimmed, "--- ") {
			continue
		}
		lines = append(lines, trimmed)
	}
	return strings.Join(lines, " / ")
}

// report prints the skips, the failures and the counts, and says whether
// everything passed.
func (s *summary) report(durations bool) bool {
	var passed, failed, skipped, unfinished int
	var skips, failures []*test
	for _, t := range s.order {
		switch {
		case t.name == "" && t.result == "fail":
			failures = append(failures, t)
		case t.name == "":
		case t.result == "pass":
			passed++
		case t.result == "skip":
			skipped++
			skips = append(skips, t)
		case t.result == "fail":
			failed++
			failures = append(failures, t)
		default:
			unfinished++
			failures = append(failures, t)
		}
	}
	if len(skips) > 0 {
		fmt.Fprintf(s.w, "\n==> %d skipped:\n", len(skips))
		for _, t := range skips {
			fmt.Fprintf(s.w, "--- SKIP: %s %s: %s\n", t.pkg, t.name, reason(t))
		}
	}
	if len(failures) > 0 && !s.verbose {
		// Verbose runs printed all of it already.
		for _, t := range failures {
			what := t.pkg + " " + t.name
			if t.name == "" {
				what = "package " + t.pkg
			}
			fmt.Fprintf(s.w, "\n==> %s: %s\n%s", failedHow(t), what, strings.Join(t.output, ""))
		}
	}
	if len(failures) > 0 {
		fmt.Fprintf(s.w, "\n==> failed:\n")
		for _, t := range failures {
			if t.name == "" {
				fmt.Fprintf(s.w, "--- FAIL: package %s\n", t.pkg)
			} else {
				fmt.Fprintf(s.w, "--- %s: %s %s\n", strings.ToUpper(failedHow(t)), t.pkg, t.name)
			}
		}
	}
	if durations {
		fmt.Fprintf(s.w, "\n==> durations:\n")
		for _, t := range s.order {
			if t.name == "" {
				continue
			}
			depth := strings.Count(t.name, "/")
			fmt.Fprintf(s.w, "%8.1f s  %s%s  %s\n", t.elapsed.Seconds(), strings.Repeat("    ", depth), t.name, strings.ToUpper(orRunning(t.result)))
		}
	}
	fmt.Fprintf(s.w, "\n==> tests: %d passed, %d failed, %d skipped, %d did not finish\n", passed, failed, skipped, unfinished)
	return len(failures) == 0
}

func failedHow(t *test) string {
	if t.result == "" {
		return "did not finish"
	}
	return "fail"
}

func orRunning(result string) string {
	if result == "" {
		return "did not finish"
	}
	return result
}
