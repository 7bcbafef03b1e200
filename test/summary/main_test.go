package main

import (
	"os"
	"strings"
	"testing"
)

// testdata/mixed.json is `go test -json -timeout 2s` of a package with a
// passing, a skipped, a failing (in a subtest) and a hanging test.
func TestSummary(t *testing.T) {
	f, err := os.Open("testdata/mixed.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out strings.Builder
	s := newSummary(&out, false)
	if err := s.read(f); err != nil {
		t.Fatal(err)
	}
	if s.report(true) {
		t.Error("report says all passed")
	}
	text := out.String()
	for _, want := range []string{
		"FAIL\tfx\t2.007s",
		"--- SKIP: fx TestSkip: fx_test.go:9: no widget here",
		"==> fail: fx TestFail/sub_bad\n=== RUN   TestFail/sub_bad\n    fx_test.go:12: boom\n",
		"==> did not finish: fx TestHang",
		"panic: test timed out after 2s",
		"--- DID NOT FINISH: fx TestHang",
		"--- FAIL: package fx",
		"    TestFail/sub_ok  PASS",
		"==> tests: 2 passed, 2 failed, 1 skipped, 1 did not finish",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
	// Passing tests' output stays out of the log.
	if strings.Contains(text, "fine") {
		t.Errorf("summary shows a passing test's log:\n%s", text)
	}
}

func TestSummaryAllPassed(t *testing.T) {
	var out strings.Builder
	s := newSummary(&out, false)
	in := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"p","Test":"TestA","Elapsed":0.5}
{"Action":"output","Package":"p","Output":"ok  \tp\t0.5s\n"}
{"Action":"pass","Package":"p","Elapsed":0.5}
`
	if err := s.read(strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if !s.report(false) {
		t.Errorf("report says something failed:\n%s", out.String())
	}
	if want := "ok  \tp\t0.5s\n\n==> tests: 1 passed, 0 failed, 0 skipped, 0 did not finish\n"; out.String() != want {
		t.Errorf("summary %q, want %q", out.String(), want)
	}
}
