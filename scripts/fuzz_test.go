package scripts

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestFuzzTargets checks that fuzz_targets, which scripts/test and
// scripts/bench fuzz run, lists every fuzz target Go's parser finds in the
// module's test files under internal/.
func TestFuzzTargets(t *testing.T) {
	out, stderr, err := bash(t, nil, "fuzz_targets")
	if err != nil {
		t.Fatalf("fuzz_targets: %v\n%s", err, stderr)
	}
	got := strings.Split(strings.TrimSpace(out), "\n")
	var want []string
	err = filepath.WalkDir("../internal", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			if name := funcName(decl); strings.HasPrefix(name, "Fuzz") {
				want = append(want, "./"+strings.TrimPrefix(filepath.Dir(path), "../")+" "+name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 {
		t.Fatal("no fuzz targets in internal/")
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("fuzz_targets lists\n%s\nGo's parser finds\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestFuzzFigures reads go test -fuzz outputs of a run that passed, one
// that found a crasher while fuzzing, one whose seed corpus failed, and one
// that Go's coordinator failed on its own deadline.
func TestFuzzFigures(t *testing.T) {
	for _, tt := range []struct{ log, want string }{
		{`fuzz: elapsed: 0s, gathering baseline coverage: 0/10 completed
fuzz: elapsed: 0s, gathering baseline coverage: 10/10 completed, now fuzzing with 2 workers
fuzz: elapsed: 3s, execs: 60018 (20006/sec), new interesting: 37 (total: 47)
fuzz: elapsed: 11s, execs: 203006 (4583/sec), new interesting: 83 (total: 93)
PASS
ok  	example.org/m/internal/contract	11.313s
`, "203006 83 -"},
		{`fuzz: elapsed: 3s, execs: 1512 (504/sec), new interesting: 4 (total: 13)
fuzz: minimizing 34-byte failing input file
fuzz: elapsed: 4s, minimizing
--- FAIL: FuzzCompress (4.06s)
    --- FAIL: FuzzCompress (0.00s)
        hostlist_test.go:182: round trip
    Failing input written to testdata/fuzz/FuzzCompress/28545b85ca7c03df
    To re-run:
    go test -run=FuzzCompress/28545b85ca7c03df
FAIL
`, "1512 4 testdata/fuzz/FuzzCompress/28545b85ca7c03df"},
		{`fuzz: elapsed: 0s, gathering baseline coverage: 0/10 completed
failure while testing seed corpus entry: FuzzParseCmdline/seed-92539cae612daf8a
--- FAIL: FuzzParseCmdline (0.03s)
FAIL
`, "0 0 seed:FuzzParseCmdline/seed-92539cae612daf8a"},
		// Go 1.26's coordinator racing its own -fuzztime deadline
		// (go.dev/issue/75804), as CI saw it.
		{`fuzz: elapsed: 3s, execs: 93798 (31263/sec), new interesting: 1 (total: 116)
fuzz: elapsed: 5s, execs: 167584 (35338/sec), new interesting: 1 (total: 116)
--- FAIL: FuzzResolvePath (5.10s)
    context deadline exceeded
FAIL
exit status 1
`, "167584 1 deadline"},
		// The same words from the target itself, under a failing input,
		// are a crash.
		{`fuzz: elapsed: 3s, execs: 1512 (504/sec), new interesting: 4 (total: 13)
--- FAIL: FuzzAPI (4.06s)
    --- FAIL: FuzzAPI (0.00s)
        api_test.go:12: context deadline exceeded
    Failing input written to testdata/fuzz/FuzzAPI/28545b85ca7c03df
FAIL
`, "1512 4 testdata/fuzz/FuzzAPI/28545b85ca7c03df"},
	} {
		out, stderr, err := bash(t, nil, "fuzz_figures <<'EOF'\n"+tt.log+"EOF\n")
		if err != nil {
			t.Fatalf("fuzz_figures: %v\n%s", err, stderr)
		}
		if got := strings.TrimSpace(out); got != tt.want {
			t.Errorf("fuzz_figures = %q, want %q, from\n%s", got, tt.want, tt.log)
		}
	}
}

// funcName is the name of a top-level function without a receiver, or "".
func funcName(d ast.Decl) string {
	if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
		return fd.Name.Name
	}
	return ""
}
